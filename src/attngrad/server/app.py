"""The ``attngrad serve`` web app: an HTTP API and a one-page UI over :class:`attngrad.Explainer`.

Routes only validate input and call the library (``Explainer.predict``,
``Explainer.explain_methods``, :func:`attngrad.viz.overlay`); the model work
runs on a bounded :class:`~attngrad.server.jobs.WorkQueue` (``503`` +
``Retry-After`` when full) and results are cached by content hash in a
bounded LRU. Clients never name files: images come as uploads, as shipped
sample ids, or as the content hash (``image_id``) of an earlier upload.

Errors: ``413`` upload over the size limit; ``400`` not an image, truncated,
or a decompression bomb; ``422`` unknown class, method, loss or sample (the
body lists the valid values), or an empty text; ``404`` unknown or expired ids;
``503`` busy, or the text model (``attngrad[text]``) not installed.
Every error body is ``{"detail": {"message": ..., ...}}``.
"""

from __future__ import annotations

import base64
import io
import json
import re
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import matplotlib
import numpy as np
import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from .. import viz
from ..demo import CASES
from ..errors import AttngradError
from ..explainer import Explainer, Explanation, Prediction
from ..io import load_image
from ..losses import LOSSES, get_loss
from ..methods import METHODS
from ..targets import resolve_targets
from .cache import LRUCache, content_hash, key_of
from .jobs import Job, JobManager, QueueFull, WorkQueue

if TYPE_CHECKING:
    from ..text import TextExplainer, TextExplanation

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_METHODS = ("gae", "complete")
DEFAULT_TEXT_METHODS = ("complete", "gae")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ServerSettings:
    """Limits of one server.

    Attributes:
        max_upload_bytes: largest uploaded file (default 20 MB); larger -> 413.
        max_pixels: largest decoded image (width x height); larger -> 400 (decompression bomb).
        queue_capacity: model tasks running or waiting; more -> 503 with Retry-After.
        decode_capacity: uploads being decoded at once; more -> 503.
        cache_items, cache_bytes: bounds of the result cache (predictions, maps, overlays).
        image_cache_bytes: bound of the cache of decoded images (model input tensors).
        max_jobs: jobs remembered (finished ones are forgotten first).
        top_k: predictions returned with each image.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    queue_capacity: int = 8
    decode_capacity: int = 8
    cache_items: int = 512
    cache_bytes: int = 64 * 1024 * 1024
    image_cache_bytes: int = 32 * 1024 * 1024
    max_jobs: int = 64
    top_k: int = 5


def _error(status: int, message: str, **extra: Any) -> HTTPException:
    return HTTPException(status_code=status, detail={"message": message, **extra})


def _sample_registry() -> dict[str, dict[str, Any]]:
    """The shipped images by id (file stem) -> path and a readable title; the only files served."""
    folder = resources.files("attngrad").joinpath("assets/images")
    samples = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        stem = Path(entry.name).stem
        title = " + ".join(CASES[entry.name]) if entry.name in CASES else stem.split("_", 1)[-1].replace("_", " ")
        samples[stem] = {"path": Path(str(entry)), "title": title}
    return samples


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _step_reporter(job: Job, steps: int) -> Callable[[int, dict[str, float]], None]:
    """An experiment's ``on_step`` callback: one job event per step (progress 5 %..90 %);
    :meth:`Job.report` raises when the client cancelled, which stops the experiment's loop."""

    def report(step: int, numbers: dict[str, float]) -> None:
        job.report(0.05 + 0.85 * step / max(steps, 1), f"step {step} of {steps}", step=step, **numbers)

    return report


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _colormap_stops(n: int = 21) -> list[str]:
    """Hex colours of :data:`attngrad.viz.CMAP` at ``n`` evenly spaced values of [-1, 1] (for the colour bar)."""
    cmap = matplotlib.colormaps[viz.CMAP]
    return [matplotlib.colors.to_hex(cmap(viz.NORM(v))) for v in np.linspace(-1.0, 1.0, n)]


def _prediction_json(p: Prediction) -> dict[str, Any]:
    return {"index": p.index, "label": p.label, "probability": p.probability, "logit": p.logit}


def _method_names(methods: str | None, default: tuple[str, ...]) -> list[str]:
    """Comma-separated method names -> distinct names in order (``default`` when none are given)."""
    return list(dict.fromkeys(m.strip() for m in (methods or ",".join(default)).split(",") if m.strip()))


def _result_size(result: dict[str, Any]) -> int:
    """Approximate bytes of a cached explain result (overlay PNGs and raw maps; a text result as JSON)."""
    if "task" in result:
        return 1024 + len(json.dumps(result))
    return 1024 + sum(len(m["png"]) + m["raw"].nbytes for m in result["methods"])


def _words_json(res: TextExplanation) -> list[dict[str, Any]]:
    """The first text of ``res`` as words: raw score (summed over word pieces) and ``S / max|S|`` over its words."""
    from ..text.display import normalized_words

    words = res.words(0)
    return [{**asdict(w), "normalized": v} for w, v in zip(words, normalized_words(words))]


class TextUnavailable(Exception):
    """The text explainer could not be loaded (``attngrad[text]`` missing): answered with 503."""


class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413 before they are parsed.

    A declared ``Content-Length`` over the limit is refused at once; a streamed body is cut
    off (the app sees a disconnect) as soon as it passes the limit, and whatever the app
    answers is replaced by the 413.
    """

    def __init__(self, app: Callable, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen = 0
        too_large = started = False

        async def limited_receive():
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        mb = self.limit / 2**20
        body = json.dumps({"detail": {"message": f"request body over {mb:.1f} MB; upload a smaller image"}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class StoredImage:
    """A decoded image: the model input (exact, from the full decode) and the picture for experiments.

    ``original`` is the decoded RGB image, downscaled to at most ``ORIGINAL_PIXELS`` pixels
    (experiments that stitch or rewrite the picture start from it).
    """

    pixels: torch.Tensor
    original: Image.Image

    @property
    def nbytes(self) -> int:
        return self.pixels.numel() * self.pixels.element_size() + 3 * self.original.width * self.original.height


#: Largest stored copy of an upload for the experiments (2 MP; larger uploads are downscaled).
ORIGINAL_PIXELS = 2_000_000


class Explorer:
    """State behind the routes: the explainer, queues, caches and jobs (one per app)."""

    def __init__(
        self, explainer: Explainer, settings: ServerSettings, model_name: str, text_model: str | Path | None = None
    ):
        self.explainer = explainer
        self.text_model = text_model
        self._text: TextExplainer | None = None
        self.settings = settings
        self.model_name = model_name
        self.queue = WorkQueue(workers=1, capacity=settings.queue_capacity)
        self.decoder = WorkQueue(workers=2, capacity=settings.decode_capacity)
        self.jobs = JobManager(self.queue, max_jobs=settings.max_jobs)
        self.results: LRUCache[Any] = LRUCache(settings.cache_items, settings.cache_bytes, sizeof=self._sizeof)
        self.images: LRUCache[StoredImage] = LRUCache(
            settings.cache_items, settings.image_cache_bytes, sizeof=lambda im: im.nbytes
        )
        self.samples = _sample_registry()
        self._dummy_logits = torch.zeros(1, len(explainer.labels))
        with torch.no_grad():  # one forward of a blank image: how many layers the rollout can start from
            blank, _ = explainer.prepare(Image.new("RGB", (256, 256)))
            self.num_layers = len(explainer.adapter.forward(blank).attentions)

    @staticmethod
    def _sizeof(value: Any) -> int:
        return _result_size(value) if isinstance(value, dict) else 4096

    # -- validation (422 lists the valid values) -------------------------------------------

    def check_methods(self, methods: str | None) -> list[str]:
        names = _method_names(methods, DEFAULT_METHODS)
        unknown = [m for m in names if m not in METHODS]
        if unknown or not names:
            raise _error(
                422,
                f"unknown method {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(METHODS)}",
                field="methods",
                valid=list(METHODS),
            )
        return names

    def check_class(self, value: str | None, field: str) -> str | None:
        """A class name, index or ``topK``, checked against the model's labels (``None``/"" stays ``None``)."""
        if value is None or not value.strip():
            return None
        try:
            resolve_targets(value.strip(), self._dummy_logits, self.explainer.labels)
        except AttngradError as err:
            raise _error(422, str(err), field=field, valid=self.explainer.labels) from None
        return value.strip()

    def check_start_layer(self, start_layer: int) -> int:
        if not 0 <= start_layer < self.num_layers:
            raise _error(
                422,
                f"start_layer {start_layer} is out of range; this model has layers 0..{self.num_layers - 1}",
                field="start_layer",
                valid=list(range(self.num_layers)),
            )
        return start_layer

    def check_loss(self, loss: str | None, contrast: str | None) -> str:
        name = loss or ("normdiff" if contrast else "logit")
        if name not in LOSSES:
            raise _error(422, f"unknown loss {name!r}; choose from {', '.join(LOSSES)}", field="loss", valid=list(LOSSES))
        if get_loss(name).needs_contrast and contrast is None:
            raise _error(422, f"loss {name!r} compares two classes: give a contrast class", field="contrast")
        return name

    # -- images ---------------------------------------------------------------------------

    async def image(
        self, file: UploadFile | None, sample: str | None, image_id: str | None, prefix: str = ""
    ) -> tuple[str, StoredImage]:
        """Exactly one of an upload, a sample id or an earlier image's id -> (content hash, stored image).

        ``prefix`` names the form fields in messages (``"guide_"`` for a guide image).
        """
        given = [x for x in (file, sample, image_id) if x not in (None, "")]
        if len(given) != 1:
            raise _error(
                422, f"give exactly one image: an uploaded '{prefix}file', a '{prefix}sample' id or an '{prefix}image_id'"
            )
        if image_id:
            stored = self.images.get(image_id) if _HEX64.match(image_id) else None
            if stored is None:
                raise _error(404, "unknown or expired image_id; upload the image again", field=f"{prefix}image_id")
            return image_id, stored
        if sample:
            if sample not in self.samples:
                raise _error(422, f"unknown sample {sample!r}", field=f"{prefix}sample", valid=list(self.samples))
            data, name = self.samples[sample]["path"].read_bytes(), sample
        else:
            data = await file.read(self.settings.max_upload_bytes + 1)
            name = Path(file.filename or "upload").name[:80]
            if len(data) > self.settings.max_upload_bytes:
                mb = self.settings.max_upload_bytes / 2**20
                raise _error(413, f"upload {name!r} is over the {mb:.1f} MB limit; upload a smaller image")
        digest = content_hash(data)
        stored = self.images.get(digest)
        if stored is None:
            try:
                stored = await self.decoder.run(self._decode, data, name)
            except AttngradError as err:
                raise _error(400, str(err)) from None
            self.images.put(digest, stored)
        return digest, stored

    def _decode(self, data: bytes, name: str) -> StoredImage:
        """Validate and preprocess image bytes with :func:`attngrad.io.load_image` (no client path involved)."""
        image = load_image(data, max_pixels=self.settings.max_pixels, name=f"upload {name!r}")
        pixels, _ = self.explainer.prepare(image)
        if image.width * image.height > ORIGINAL_PIXELS:
            scale = (ORIGINAL_PIXELS / (image.width * image.height)) ** 0.5
            image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
        return StoredImage(pixels.detach().cpu(), image)

    # -- model work (runs on the queue's worker) --------------------------------------------

    def predict_work(self, image: StoredImage, k: int) -> list[dict[str, Any]]:
        return [_prediction_json(p) for p in self.explainer.predict(image.pixels, k=k)[0]]

    def explain_work(
        self,
        image: StoredImage,
        methods: list[str],
        target: str | None,
        contrast: str | None,
        loss: str,
        start_layer: int,
        guide: StoredImage | None = None,
    ) -> dict[str, Any]:
        """Every method from one pass (with a guide: on the image stitched beside it, map cropped back)."""
        if guide is None:
            results = self.explainer.explain_methods(
                image.pixels, methods, target=target, loss=loss, contrast=contrast, start_layer=start_layer
            )
        else:
            results = self.explainer.explain_methods(
                image.original, methods, target=target, loss=loss, contrast=contrast, start_layer=start_layer,
                guide=guide.original,
            )
        first: Explanation = results[methods[0]]
        labels = self.explainer.labels
        logits = first.logits if guide is None else first.original_logits  # the image's own, not the stitch's
        t = int(first.targets[0])
        c = None if first.contrasts is None else int(first.contrasts[0])
        entries = []
        for name, res in results.items():
            raw = res.maps[0].detach().float().cpu().numpy()
            png = _png(viz.overlay(res.images[0], raw))
            entries.append({"name": name, "raw": raw, "png": png})
        return {
            "target": {"index": t, "label": labels[t], "logit": float(logits[0, t])},
            "contrast": None if c is None else {"index": c, "label": labels[c], "logit": float(logits[0, c])},
            "loss": first.loss,
            "guided": guide is not None,
            "grid": list(first.maps.shape[1:]),
            "predictions": [_prediction_json(p) for p in self.explainer.top_k(logits, self.settings.top_k)[0]],
            "methods": entries,
        }

    def _class_indices(self, image: StoredImage, *specs: str | None) -> list[int]:
        """Resolve class specs (names, indices, ``topK``; ``None`` = top1) against the image's own logits."""
        with torch.no_grad():
            logits = self.explainer.adapter.forward(image.pixels.to(self.explainer.device)).logits
        return [int(resolve_targets(spec, logits, self.explainer.labels)[0]) for spec in specs]

    def rewrite_job(
        self, image: StoredImage, to: str, from_: str | None, eps: float, steps: int, probability: float
    ) -> Callable[[Job], dict[str, Any]]:
        """Class rewriting (paper, experiment 5) as a job; the result has before/after pictures, the
        ``complete`` maps of both classes on both pictures, and the numbers."""

        def work(job: Job) -> dict[str, Any]:
            from ..experiments.rewrite import rewrite  # imported when used: the experiments are optional here

            to_idx, from_idx = self._class_indices(image, to, from_)
            labels = self.explainer.labels
            job.report(0.05, f"rewriting {labels[from_idx]!r} -> {labels[to_idx]!r} (at most {steps} steps)")
            res = rewrite(
                self.explainer, image.original, to_idx, from_idx, eps=eps, steps=steps, probability=probability,
                on_step=_step_reporter(job, steps),
            )
            job.report(0.9, "explaining before and after")
            pictures = [res.original, res.original, res.rewritten, res.rewritten]
            maps = self.explainer.explain_methods(pictures, ["complete"], target=[from_idx, to_idx] * 2)["complete"]
            cells = [
                {
                    "image": "before" if i < 2 else "after",
                    "class": labels[int(maps.targets[i])],
                    "logit": float(maps.logits[i, int(maps.targets[i])]),
                    "peak": float(maps.maps[i].abs().max()),
                    "overlay": _data_url(_png(viz.overlay(maps.images[i], maps.maps[i]))),
                }
                for i in range(4)
            ]
            return {
                "numbers": res.numbers(),
                "original": _data_url(_png(res.original)),
                "rewritten": _data_url(_png(res.rewritten)),
                "difference": _data_url(_png(res.difference())),
                "maps": cells,
            }

        return work

    def transfer_job(
        self, image: StoredImage, target: str | None, opposing: str | None, steps: int, lr: float, optimizer: str
    ) -> Callable[[Job], dict[str, Any]]:
        """Attention transfer (paper, experiment 2) as a job; the result has one animation frame
        (``complete`` overlay of the target and both logits) per step."""

        def work(job: Job) -> dict[str, Any]:
            from ..experiments.transfer import attention_transfer  # imported when used

            job.report(0.05, f"descending the target logit for {steps} steps")
            res = attention_transfer(
                self.explainer, image.pixels, target, opposing, steps=steps, lr=lr, optimizer=optimizer,
                on_step=_step_reporter(job, steps),
            )
            job.report(0.9, "drawing the frames")
            frames = [
                {**row, "overlay": _data_url(_png(viz.overlay(res.image, s.map))), "peak": float(s.map.abs().max())}
                for row, s in zip(res.rows(), res.steps)
            ]
            return {
                "target": res.target,
                "opposing": res.opposing,
                "optimizer": res.optimizer,
                "lr": res.lr,
                "reproduction_error": res.reproduction_error,
                "opposing_overlay": _data_url(_png(viz.overlay(res.image, res.opposing_map))),
                "frames": frames,
            }

        return work

    # -- text (BERT-family models, attngrad[text]; loaded on first use) ----------------------

    async def text_explainer(self) -> TextExplainer:
        """The text explainer, loaded on the worker queue the first time it is needed."""
        if self._text is None:
            self._text = await self.queue.run(self._load_text)
        return self._text

    def _load_text(self) -> TextExplainer:
        if self._text is not None:  # loaded by an earlier queued request
            return self._text
        try:
            from ..text import TextExplainer

            return TextExplainer.from_pretrained(self.text_model, device=self.explainer.device)
        except ImportError as err:
            raise TextUnavailable(f"the text explainer cannot load ({err}); pip install 'attngrad[text]'") from None
        except AttngradError as err:
            raise TextUnavailable(str(err)) from None

    @staticmethod
    def check_text_methods(text_explainer: TextExplainer, methods: str | None) -> list[str]:
        """Method names defined on text for this model (422 lists the valid ones): what
        :meth:`~attngrad.text.TextExplainer.method` accepts."""
        names = _method_names(methods, DEFAULT_TEXT_METHODS)
        valid = []
        for name in METHODS:
            try:
                text_explainer.method(name)
            except AttngradError:
                continue
            valid.append(name)
        unknown = [m for m in names if m not in valid]
        if unknown or not names:
            raise _error(
                422,
                f"unknown text method {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"choose from {', '.join(valid)}",
                field="methods",
                valid=valid,
            )
        return names

    def text_work(
        self,
        text_explainer: TextExplainer,
        text: str,
        against: str | None,
        labels: str | None,
        methods: list[str],
        loss: str,
        contrast: str | None,
    ) -> dict[str, Any]:
        """Every method from one pass of :meth:`attngrad.text.TextExplainer.explain_methods` (similarity
        with ``against``, zero-shot with ``labels``), as words with raw and ``S / max|S|`` scores."""
        from ..text.display import describe

        results = text_explainer.explain_methods(text, methods, loss=loss, contrast=contrast, against=against,
                                                 labels=labels)
        first: TextExplanation = next(iter(results.values()))
        logits = first.logits[0].tolist()
        t = int(first.targets[0])
        return {
            "task": first.task,
            "text": text,
            "against": against,
            "loss": first.loss,
            "labels": first.labels,
            "logits": dict(zip(first.labels, logits)),
            "predicted": first.labels[int(first.logits[0].argmax())],
            "target": {"label": first.labels[t], "logit": logits[t]},
            "contrast": None if first.contrasts is None else first.contrast_names[0],
            "methods": [
                {
                    "name": name,
                    "title": describe(res, 0),
                    "words": _words_json(res),
                    "against_words": None if res.reverse is None else _words_json(res.reverse),
                }
                for name, res in results.items()
            ],
        }

    async def cached(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """The cached value for ``key``, or ``fn(*args)`` run on the worker queue (and cached)."""
        value = self.results.get(key)
        if value is None:
            value = await self.queue.run(fn, *args)
            self.results.put(key, value)
        return value


def create_app(
    explainer: Explainer,
    settings: ServerSettings | None = None,
    model_name: str = "shipped ViT-Ti",
    text_model: str | Path | None = None,
) -> FastAPI:
    """The FastAPI app for one explainer (``attngrad serve`` runs it with uvicorn).

    Args:
        explainer: the model to explore.
        settings: limits (upload size, queue and cache sizes); defaults: :class:`ServerSettings`.
        model_name: shown in the UI and ``/api/info``.
        text_model: the BERT-family folder of the text tab, loaded on first use
            (default: all-MiniLM-L6-v2 from ``attngrad[text]``).
    """
    settings = settings or ServerSettings()
    ex = Explorer(explainer, settings, model_name, text_model)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        ex.queue.shutdown()
        ex.decoder.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="attngrad explorer",
        description="Explain Vision Transformer predictions from attention maps and their gradients "
        "(Cui, Fan & Chen; GAE, rollout). Images come as uploads, shipped sample ids or image_id hashes.",
        version="0.1.0",
    )
    app.state.explorer = ex
    app.add_middleware(_BodyLimit, limit=2 * settings.max_upload_bytes + (1 << 20))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(QueueFull)
    async def _busy(_request: Request, err: QueueFull) -> JSONResponse:
        return JSONResponse(
            {"detail": {"message": str(err), "retry_after": err.retry_after}},
            status_code=503,
            headers={"Retry-After": str(err.retry_after)},
        )

    @app.exception_handler(TextUnavailable)
    async def _no_text(_request: Request, err: TextUnavailable) -> JSONResponse:
        return JSONResponse({"detail": {"message": str(err)}}, status_code=503)

    @app.exception_handler(AttngradError)
    async def _user_error(_request: Request, err: AttngradError) -> JSONResponse:
        return JSONResponse({"detail": {"message": str(err)}}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Liveness, queue and cache statistics."""
        return {"status": "ok", "queue": ex.queue.stats(), "results": ex.results.stats(), "images": ex.images.stats()}

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        """Model, methods, losses, display colours and limits."""
        return {
            "model": model_name,
            "num_classes": len(explainer.labels),
            "methods": list(METHODS),
            "default_methods": list(DEFAULT_METHODS),
            "losses": list(LOSSES),
            "colormap": _colormap_stops(),
            "limits": asdict(settings),
        }

    @app.get("/api/classes")
    async def classes(search: str | None = None) -> dict[str, Any]:
        """The model's classes (index, label), optionally those containing ``search``."""
        needle = (search or "").lower()
        return {
            "classes": [{"index": i, "label": lab} for i, lab in enumerate(explainer.labels) if needle in lab.lower()]
        }

    @app.get("/api/samples")
    async def samples() -> dict[str, Any]:
        """The shipped sample images, by id."""
        return {
            "samples": [
                {"id": sid, "title": s["title"], "url": f"/api/samples/{sid}/image"} for sid, s in ex.samples.items()
            ]
        }

    @app.get("/api/samples/{sample_id}/image")
    async def sample_image(sample_id: str) -> FileResponse:
        """The image file of a shipped sample (ids only; no paths)."""
        if sample_id not in ex.samples:
            raise _error(404, f"unknown sample {sample_id!r}", valid=list(ex.samples))
        return FileResponse(ex.samples[sample_id]["path"])

    @app.post("/api/predict")
    async def predict(
        file: UploadFile | None = File(None, description="an image file (JPEG, PNG, ...)"),
        sample: str | None = Form(None, description="a sample id from /api/samples"),
        image_id: str | None = Form(None, description="the image_id of an earlier upload"),
        k: int = Form(5, ge=1, le=100),
    ) -> dict[str, Any]:
        """Top-k predictions; the returned ``image_id`` names the image in later calls."""
        digest, image = await ex.image(file, sample, image_id)
        predictions = await ex.cached(key_of("predict", digest, k), ex.predict_work, image, k)
        return {"image_id": digest, "predictions": predictions}

    @app.post("/api/explain")
    async def explain(
        file: UploadFile | None = File(None, description="an image file (JPEG, PNG, ...)"),
        sample: str | None = Form(None, description="a sample id from /api/samples"),
        image_id: str | None = Form(None, description="the image_id of an earlier upload"),
        methods: str | None = Form(None, description="comma-separated method names (default: gae,complete)"),
        target: str | None = Form(None, description="class name, index or topK (default: top1)"),
        contrast: str | None = Form(None, description="second class for two-class losses (detail interpretation)"),
        loss: str | None = Form(None, description="logit, normdiff, diff, ratio (default: logit; normdiff with a contrast)"),
        start_layer: int = Form(0, description="first layer of the rollout product"),
        guide_sample: str | None = Form(None, description="external guidance: a sample id stitched beside the image"),
        guide_image_id: str | None = Form(None, description="external guidance: an earlier upload's image_id"),
    ) -> dict[str, Any]:
        """Maps of one image for one target, several methods from one forward + backward pass.

        Each method comes with the raw map (``map``, gh x gw numbers, sign kept), its
        ``peak`` max|S|, the overlay as a PNG data URL (display rules of :mod:`attngrad.viz`)
        and download URLs for the PNG and the raw map (.npy). With a guide (paper, external
        guidance) the image is explained stitched beside the guide and the map of the image's
        own region is returned (the stitch starts from the stored picture, at most 2 MP).
        """
        names = ex.check_methods(methods)
        target = ex.check_class(target, "target")
        contrast = ex.check_class(contrast, "contrast")
        loss_name = ex.check_loss(loss, contrast)
        start_layer = ex.check_start_layer(start_layer)
        digest, image = await ex.image(file, sample, image_id)
        guide_digest, guide = None, None
        if guide_sample or guide_image_id:
            guide_digest, guide = await ex.image(None, guide_sample, guide_image_id, prefix="guide_")
        key = key_of("explain", digest, names, target, contrast, loss_name, start_layer, guide_digest)
        result = await ex.cached(key, ex.explain_work, image, names, target, contrast, loss_name, start_layer, guide)
        return {
            "result_id": key,
            "image_id": digest,
            "guide_id": guide_digest,
            **{k: v for k, v in result.items() if k != "methods"},
            "methods": [
                {
                    "name": m["name"],
                    "map": m["raw"].tolist(),
                    "peak": float(np.abs(m["raw"]).max()),
                    "overlay": _data_url(m["png"]),
                    "png_url": f"/api/results/{key}/{m['name']}.png",
                    "npy_url": f"/api/results/{key}/{m['name']}.npy",
                }
                for m in result["methods"]
            ],
        }

    @app.post("/api/explain-text")
    async def explain_text(
        text: str = Form("", description="the text to explain"),
        against: str | None = Form(None, description="similarity: the text to compare with"),
        labels: str | None = Form(None, description="zero-shot: label descriptions, comma-separated"),
        methods: str | None = Form(None, description="comma-separated method names (default: complete,gae)"),
        loss: str | None = Form(
            None, description="logit, normdiff, diff, ratio (default: logit; normdiff with a contrast)"
        ),
        contrast: str | None = Form(None, description="zero-shot: a second label, or top2 (the runner-up)"),
    ) -> dict[str, Any]:
        """Word scores of one text with a sentence encoder (MiniLM), every method from one pass.

        Similarity (``against``): why ``cos(e(text), e(against))`` is what it is, with the words of
        ``against`` explained the other way (``against_words``). Zero-shot (``labels``): the
        predicted label (``predicted``), explained with ``logit`` or against ``contrast`` (``normdiff``).
        Each word has its raw ``score`` (summed over its word pieces, sign kept) and ``normalized``,
        ``S / max|S|`` over the text's words (the colours of the UI).
        """
        if not text.strip():
            raise _error(422, "the text is empty; type at least one word", field="text")
        against = against if against and against.strip() else None
        labels = labels if labels and labels.strip() else None
        contrast = contrast.strip() if contrast and contrast.strip() else None
        if (against is None) == (labels is None):
            raise _error(
                422, "give either a text to compare with ('against') or comma-separated labels ('labels')",
                field="against" if against is None else "labels",
            )
        loss_name = ex.check_loss(loss, contrast)
        text_explainer = await ex.text_explainer()
        names = ex.check_text_methods(text_explainer, methods)
        key = key_of("explain-text", text, against, labels, names, loss_name, contrast)
        return await ex.cached(key, ex.text_work, text_explainer, text, against, labels, names, loss_name, contrast)

    @app.get("/api/results/{result_id}/{method}.{fmt}")
    async def result_file(result_id: str, method: str, fmt: str) -> Response:
        """Download one method's overlay (``.png``) or raw map (``.npy``) from a cached explain result."""
        if fmt not in ("png", "npy"):
            raise _error(404, f"unknown format {fmt!r}; use .png or .npy", valid=["png", "npy"])
        result = ex.results.get(result_id) if _HEX64.match(result_id) else None
        if result is None or "methods" not in result or "task" in result:
            raise _error(404, "unknown or expired result_id; explain again")
        entry = next((m for m in result["methods"] if m["name"] == method), None)
        if entry is None:
            raise _error(404, f"method {method!r} is not in this result", valid=[m["name"] for m in result["methods"]])
        filename = f"{result['target']['label'].replace(' ', '_')}_{method}.{fmt}"
        return Response(
            entry["png"] if fmt == "png" else _npy(entry["raw"]),
            media_type="image/png" if fmt == "png" else "application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _started(job: Job) -> JSONResponse:
        return JSONResponse(
            {"job_id": job.id, "status_url": f"/api/jobs/{job.id}", "events_url": f"/api/jobs/{job.id}/events"},
            status_code=202,
        )

    @app.post("/api/jobs/rewrite", status_code=202)
    async def start_rewrite(
        file: UploadFile | None = File(None),
        sample: str | None = Form(None),
        image_id: str | None = Form(None),
        to: str = Form(..., description="the class to reach (name, index or topK)"),
        from_: str | None = Form(None, alias="from", description="the class to leave (default: the prediction)"),
        eps: float = Form(2 / 255, gt=0, le=1, description="L-inf budget in [0, 1] units (whole 8-bit levels)"),
        steps: int = Form(50, ge=1, le=500),
        probability: float = Form(0.9, gt=0, lt=1, description="stop once 'to' is top-1 with this probability"),
    ) -> JSONResponse:
        """Class rewriting (paper, experiment 5) as a job: poll ``status_url`` or stream ``events_url``."""
        to = ex.check_class(to, "to")
        if to is None:
            raise _error(422, "give the class to reach in 'to'", field="to", valid=explainer.labels)
        from_ = ex.check_class(from_, "from")
        _, image = await ex.image(file, sample, image_id)
        return _started(ex.jobs.start("rewrite", ex.rewrite_job(image, to, from_, eps, steps, probability)))

    @app.post("/api/jobs/transfer", status_code=202)
    async def start_transfer(
        file: UploadFile | None = File(None),
        sample: str | None = Form(None),
        image_id: str | None = Form(None),
        target: str | None = Form(None, description="the class whose logit is descended (default: top1)"),
        opposing: str | None = Form(None, description="the other class (default: the strongest other class)"),
        steps: int = Form(12, ge=0, le=200),
        lr: float = Form(4e-4, gt=0, le=10, description="learning rate (the paper: 0.0004)"),
        optimizer: str = Form("adam", description="adam or sgd"),
    ) -> JSONResponse:
        """Attention transfer (paper, experiment 2) as a job: one animation frame per step."""
        if optimizer not in ("adam", "sgd"):
            raise _error(422, f"unknown optimizer {optimizer!r}; choose adam or sgd", field="optimizer", valid=["adam", "sgd"])
        target = ex.check_class(target, "target")
        opposing = ex.check_class(opposing, "opposing")
        _, image = await ex.image(file, sample, image_id)
        return _started(ex.jobs.start("transfer", ex.transfer_job(image, target, opposing, steps, lr, optimizer)))

    @app.get("/api/jobs/{job_id}")
    async def job_status(job_id: str, since: int = 0) -> dict[str, Any]:
        """A job's status, progress, events from index ``since``, and result or error."""
        return _job(job_id).snapshot(since=max(0, since))

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str) -> StreamingResponse:
        """Server-sent events: one ``progress`` event per step, then an ``end`` event."""
        job = _job(job_id)

        async def lines():
            async for event in ex.jobs.stream(job):
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.delete("/api/jobs/{job_id}")
    async def job_cancel(job_id: str) -> dict[str, Any]:
        """Cancel a job; it stops after its current step."""
        job = _job(job_id)
        job.cancel()
        return job.snapshot()

    def _job(job_id: str):
        job = ex.jobs.get(job_id)
        if job is None:
            raise _error(404, f"unknown job {job_id!r} (finished jobs are forgotten after a while)")
        return job

    return app
