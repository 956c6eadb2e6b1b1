"""Adapters over Hugging Face ``transformers`` models.

:class:`HFModelAdapter` is the modality-neutral part (eager attention, labels,
attention override) shared by image and text adapters; :class:`HFAdapter` adds
the image part (preprocessor and patch grid, read from the model's own config and
processor config — never guessed).

Maps are read with ``output_attentions=True`` under eager attention. Attention
transfer replaces them through transformers' own attention-function interface
(``AttentionInterface``): for each override a function is registered under a name
of its own, holding that call's maps and counter in a closure, and removed when
the override ends (no module-level state; two overrides never share maps).
"""

from __future__ import annotations

import itertools
import json
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from .base import ForwardOutput, ImageAdapter, ModelAdapter
from .preprocess import Preprocessor

_OVERRIDE_PREFIX = "attngrad_stored_maps_"


def _eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The model's own eager attention: its modelling file's ``eager_attention_forward`` (masks,
    grouped key/value heads and all), else softmax(Q K^T · scaling + mask) V."""
    own = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if callable(own):
        return own(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _stored_maps_function(maps: Sequence[torch.Tensor | None]):
    """An attention function that ignores Q and K and uses the next of ``maps`` (one per layer, in
    order); a ``None`` entry leaves that layer's attention to the model."""
    maps = list(maps)
    counter = itertools.count()

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        stored = maps[next(counter) % len(maps)]
        if stored is None:
            return _eager_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        weights = stored.to(value.dtype)
        if value.shape[1] != weights.shape[1]:  # grouped-query attention: a key/value head serves several query heads
            value = value.repeat_interleave(weights.shape[1] // value.shape[1], dim=1)
        output = torch.matmul(weights, value).transpose(1, 2).contiguous()
        return output, weights

    return attention


@contextmanager
def attention_function(configs: Sequence[Any], function: Callable[..., Any], *, masks: bool = True,
                       prefix: str = _OVERRIDE_PREFIX) -> Iterator[None]:
    """``function`` as the attention of every model whose config is in ``configs`` (transformers' attention
    interface, under a fresh name starting with ``prefix``), restored after, also on an error. With ``masks`` the
    name also gets the mask function of the first config's own implementation: without one, transformers would
    pass no mask at all (no causal mask, no padding)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = prefix + uuid.uuid4().hex
    previous = [(c, c._attn_implementation) for c in configs]
    mapping = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    AttentionInterface.register(name, function)
    if masks:
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, mapping.get(previous[0][1], mapping["eager"]))  # type: ignore[arg-type]
    for config, _ in previous:
        config._attn_implementation = name
    try:
        yield
    finally:
        for config, before in previous:
            config._attn_implementation = before
        AttentionInterface._global_mapping.pop(name, None)
        mapping.pop(name, None)


def _pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value, value
    values = tuple(int(v) for v in value)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _is_hf_model(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "set_attn_implementation")


class HFModelAdapter(ModelAdapter):
    """Modality-neutral wrap of a ``transformers`` ``PreTrainedModel``: eager attention, labels, override.

    Subclasses implement :meth:`forward`.
    """

    def __init__(self, model: nn.Module, labels: list[str] | None = None):
        config = getattr(model, "config", None)
        if config is None:
            raise AttngradError(f"{type(model).__name__} is not a Hugging Face PreTrainedModel (it has no config)")
        ensure_eager(model)
        self.model = model.eval()
        id2label = getattr(config, "id2label", None) or {}
        n = getattr(config, "num_labels", len(id2label))
        self.labels = labels or [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(n)]
        self.special_tokens = {"cls": 0}

    @contextmanager
    def override_attention(self, maps: Sequence[torch.Tensor | None]) -> Iterator[None]:
        with self._attention_function(_stored_maps_function(maps)):
            yield

    @contextmanager
    def observe_attention(self, observer: Callable[[nn.Module, torch.Tensor], None]) -> Iterator[None]:
        """Within the context every attention layer runs the model's own eager attention and hands its
        probabilities (B, H, N, N), in the graph, to ``observer(attention_module, weights)`` (also when
        activation checkpointing recomputes the layer in the backward pass)."""

        def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
            output, weights = _eager_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
            observer(module, weights)
            return output, weights

        with self._attention_function(attention):
            yield

    @contextmanager
    def recompute_attention(self, on_gradient: Callable[[nn.Module, torch.Tensor, torch.Tensor], None]) -> Iterator[None]:
        """Within the context every attention layer runs fused (PyTorch's ``scaled_dot_product_attention``
        through transformers' ``sdpa`` function: no N x N map is kept for the backward pass). When the
        gradient of a layer's attention output ``dO`` arrives in the backward pass, the layer's probabilities
        ``A`` (B, H, N, N) are recomputed from its saved queries and keys by the model's own eager attention,
        and ``on_gradient(attention_module, A, dA)`` gets them with their gradient ``dA = dO · V^T`` (the
        gradient an eager pass would give ``A``). One layer's maps exist at a time."""
        from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

        def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
            output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                               scaling=scaling, **kwargs)
            if output.requires_grad:
                saved = (query.detach(), key.detach(), value.detach(), attention_mask)

                def hook(grad: torch.Tensor) -> None:  # grad: (B, N, H, d), like the output
                    q, k, v, mask = saved
                    with torch.no_grad():
                        _, weights = _eager_attention(module, q, k, v, mask, scaling, 0.0, **kwargs)
                        v = repeat_kv(v, weights.shape[1] // v.shape[1])
                        on_gradient(module, weights, torch.matmul(grad.transpose(1, 2), v.transpose(-1, -2)))

                output.register_hook(hook)
            return output, None

        with self._attention_function(attention):
            yield

    @contextmanager
    def checkpointing(self) -> Iterator[None]:
        """Activation checkpointing of every decoder layer within the context (transformers'
        ``GradientCheckpointingLayer`` switch, non-reentrant ``torch.utils.checkpoint``): each layer keeps
        only its input for the backward pass and is recomputed there, so the attention maps of one layer
        at a time are in memory. Only the layers' own ``training`` flag is set (their submodules stay in
        eval mode: no dropout)."""
        from functools import partial

        from torch.utils.checkpoint import checkpoint
        from transformers.modeling_layers import GradientCheckpointingLayer

        layers = [m for m in self.model.modules() if isinstance(m, GradientCheckpointingLayer)]
        if not layers:
            raise AttngradError(f"{type(self.model).__name__} has no checkpointable layers, so long inputs cannot "
                                "be explained one layer at a time; shorten the input")
        saved = [(m, m.gradient_checkpointing, m.training, m.__dict__.get("_gradient_checkpointing_func")) for m in layers]
        for m in layers:
            m.gradient_checkpointing = True
            m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)  # type: ignore[assignment]
            m.training = True
        try:
            yield
        finally:
            for m, on, training, func in saved:
                m.gradient_checkpointing, m.training = on, training
                if func is None:
                    m.__dict__.pop("_gradient_checkpointing_func", None)
                else:
                    m._gradient_checkpointing_func = func

    @contextmanager
    def _attention_function(self, function: Callable[..., Any]) -> Iterator[None]:
        """``function`` as every layer's attention (transformers' attention interface) within the context,
        with the attention mask the model's own implementation gets (causal, padding)."""
        if getattr(self.model, "config", None) is None:
            raise AttngradError(f"{type(self.model).__name__} has no config, so its attention cannot be overridden")
        with attention_function(_configs(self.model), function):
            yield


class HFAdapter(HFModelAdapter, ImageAdapter):
    """Wrap a ``transformers`` ``PreTrainedModel`` image classifier (ViT, DeiT, BEiT, DINOv2, ...).

    Args:
        model: e.g. ``ViTForImageClassification``; switched to eager attention and eval mode.
        preprocessor: defaults to a resize to ``config.image_size`` with mean = std = 0.5 (the
            ViT processor's defaults) when the model came without a ``preprocessor_config.json``.
        labels: defaults to ``config.id2label``.

    Raises:
        AttngradError: when the config gives no ``patch_size``, or no ``image_size`` and no
            preprocessor was given.
    """

    def __init__(self, model: nn.Module, preprocessor: Preprocessor | None = None, labels: list[str] | None = None):
        super().__init__(model, labels)
        config = self.model.config
        name = type(model).__name__
        patch = _pair(getattr(config, "patch_size", None))
        if patch is None and getattr(config, "num_attention_heads", None) is None:
            raise AttngradError(
                f"{name} is not a Vision Transformer: it has no self-attention maps to explain; "
                "use a Transformer with standard self-attention (ViT, DeiT, BEiT, DINOv2)"
            )
        if patch is None:
            raise AttngradError(
                f"{name}: its config has no patch_size, so the patch grid is unknown; "
                "wrap it in an adapter of its own (docs/adding-a-model-family.md)"
            )
        self.patch_size = patch
        if preprocessor is None:
            size = _pair(getattr(config, "image_size", None))
            if size is None:
                raise AttngradError(
                    f"{name}: its config has no image_size and no preprocessor was given; "
                    "pass HFAdapter(model, preprocessor=Preprocessor(resize=(H, W)))"
                )
            preprocessor = Preprocessor(resize=size)
        self.preprocessor = preprocessor
        if getattr(config, "model_type", "") == "deit":  # every DeiT embedding has a distillation token
            self.special_tokens["distillation"] = 1
        for i in range(int(getattr(config, "num_register_tokens", 0) or 0)):
            self.special_tokens[f"register{i}"] = len(self.special_tokens)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str | None = None) -> "HFAdapter":
        """Load a local model folder, or a Hub model by name (when online)."""
        from transformers import AutoModelForImageClassification
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        text = str(name_or_path)
        path = check_model_folder(text, missing="pass an existing folder with config.json and weights (or a Hub name "
                                                "such as google/vit-base-patch16-224 when online)")
        if path is not None and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise AttngradError(f"{path}: no weights (model.safetensors or pytorch_model.bin); copy them in")
        model = load_all_weights(
            AutoModelForImageClassification, text, attn_implementation="eager",
            failure=lambda why: f"cannot load image classifier {name_or_path!r}: {why}; pass a local model folder, "
                                "or a Hub name when online",
            hint="is it an image classifier (a *ForImageClassification folder with its head)?")
        preprocessor = folder_preprocessor(text)
        if device is not None:
            model = model.to(device)
        return cls(model, preprocessor)

    def forward(self, pixel_values: torch.Tensor) -> ForwardOutput:
        out = self.model(pixel_values=pixel_values, output_attentions=True)
        return ForwardOutput(out.logits, self.check_attentions(getattr(out, "attentions", None)))


def load_all_weights(loader: Any, where: str, *, failure: Callable[[str], str], hint: str = "",
                     unused: Callable[[str], bool] = lambda key: False, **kwargs: Any) -> nn.Module:
    """``loader.from_pretrained(where, **kwargs)``, refusing in one line a folder that lacks some of the model's
    weights: transformers would fill them with random values, and the explanation would be of noise.

    ``failure(first line of the error)`` is the message when loading fails; ``hint`` follows the missing weights'
    message; ``unused(key)`` names weights the explanation never reads (e.g. a text encoder's pooler), which may
    be missing. Transformers' own loading report is silenced (it would come before the one-line error)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = loader.from_pretrained(where, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise AttngradError(failure(first_line(err))) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(k for k in info.get("missing_keys") or () if not unused(k))
    if missing:
        raise AttngradError(f"{where}: {len(missing)} weights of {type(model).__name__} are not in the folder "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), so they would be random"
                            + (f"; {hint}" if hint else ""))
    return model


def ensure_eager(model: nn.Module) -> None:
    """Switch a Hugging Face model (or sub-model with a config) to eager attention, so that it returns its maps.

    Raises:
        AttngradError: when it cannot switch (it is then no Transformer whose maps attngrad can read).
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", "eager") != "eager":
        name = type(model).__name__
        switch = getattr(model, "set_attn_implementation", None)
        if not callable(switch):
            raise AttngradError(f"{name} is not a Hugging Face PreTrainedModel: it cannot switch to eager attention")
        try:
            switch("eager")
        except Exception as err:  # noqa: BLE001  (transformers raises several types here)
            raise AttngradError(
                f"{name} cannot use eager attention, so it returns no attention maps ({first_line(err)}); attngrad "
                "needs a Transformer whose attention maps can be returned"
            ) from None
    # sub-models holding their own copy of the config (T5's encoder and decoder stacks) are not switched by
    # set_attn_implementation in every transformers 5.x: switch those copies too
    if isinstance(model, nn.Module):
        for sub in _configs(model):
            if sub is not config:
                sub._attn_implementation = "eager"


def _configs(model: nn.Module) -> list[Any]:
    """The model's config, then every config object a sub-model holds of its own (T5's stacks keep copies):
    the configs whose ``_attn_implementation`` decides which attention each layer runs."""
    top = getattr(model, "config", None)
    found = {id(top): top} if top is not None else {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            found.setdefault(id(config), config)
    return list(found.values())


def check_model_folder(name_or_path: str | Path, *, missing: str = "check the path") -> Path | None:
    """The folder of a model named by folder or Hub name, checked before anything loads.

    Returns the folder when ``name_or_path`` exists, ``None`` for a Hub name.

    Raises:
        AttngradError: an existing path that is a file or has no ``config.json``; a name that
            looks like a path (:func:`looks_like_path`) but does not exist (``missing`` says what to do).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AttngradError(f"{text}: is a file, not a Hugging Face model folder (a folder with config.json)")
        if not (path / "config.json").is_file():
            raise AttngradError(f"{text}: not a Hugging Face model folder (no config.json)")
        return path
    if looks_like_path(text):
        raise AttngradError(f"{text}: no such model folder; {missing}")
    return None


def load_config(where: str | Path, *, what: str = "model",
                hint: str = "pass a local model folder, or a Hub name when online",
                error: type[AttngradError] = AttngradError, **kwargs: Any) -> Any:
    """``AutoConfig.from_pretrained(where, **kwargs)``; its errors become one line naming ``what`` and the ``hint``."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(where), **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise error(f"cannot load {what} {str(where)!r}: {first_line(err)}; {hint}") from None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (transformers' messages run to many lines), or its type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def image_processor_config(where: str) -> dict[str, Any] | None:
    """A model folder's or Hub repository's image-processor config (``preprocessor_config.json``), read as
    ``AutoImageProcessor.from_pretrained`` reads it (a local folder, else the Hub cache or download); ``None``
    when it has none."""
    from transformers import ImageProcessingMixin

    try:
        proc_cfg, _ = ImageProcessingMixin.get_image_processor_dict(where)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    return dict(proc_cfg) if proc_cfg else None


def folder_preprocessor(where: str) -> Preprocessor | None:
    """The preprocessing a model folder's (or Hub repository's) image-processor config states, if any."""
    proc_cfg = image_processor_config(where)
    return Preprocessor.from_hf(proc_cfg) if proc_cfg else None


def looks_like_path(text: str) -> bool:
    """A name a user meant as a folder: starts with ./ ../ / ~ or a drive, or has a backslash or
    more than one slash (Hub ids are ``owner/name``)."""
    return (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or text.count("/") > 1
        or (len(text) > 1 and text[1] == ":")
    )
