"""Adapter over Hugging Face ``transformers`` image classifiers (ViT, DeiT, BEiT, ...).

Maps are read with ``output_attentions=True`` under eager attention. Attention
transfer replaces them through transformers' own attention-function interface
(``AttentionInterface``): a registered function returns the stored maps and
multiplies them with the values, on the real, unmodified model.
"""

from __future__ import annotations

import itertools
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from .base import ForwardOutput, ModelAdapter
from .preprocess import Preprocessor

_OVERRIDE_NAME = "attngrad_stored_maps"
_override_state: dict = {}


def _stored_maps_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention function that ignores Q and K and uses the next stored map (one per layer, in order)."""
    maps, counter = _override_state["maps"], _override_state["counter"]
    weights = maps[next(counter) % len(maps)].to(value.dtype)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _register_override() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_OVERRIDE_NAME, _stored_maps_attention)


class HFAdapter(ModelAdapter):
    """Wrap a ``transformers`` ``PreTrainedModel`` image classifier.

    Args:
        model: e.g. ``ViTForImageClassification``; switched to eager attention and eval mode.
        preprocessor: defaults to a resize to ``config.image_size`` with mean = std = 0.5 when
            the model came without a ``preprocessor_config.json``.
        labels: defaults to ``config.id2label``.
    """

    def __init__(self, model: nn.Module, preprocessor: Preprocessor | None = None, labels: list[str] | None = None):
        config = getattr(model, "config", None)
        if config is None or not hasattr(model, "set_attn_implementation"):
            raise AttngradError(f"{type(model).__name__} is not a Hugging Face PreTrainedModel")
        if config._attn_implementation != "eager":
            try:
                model.set_attn_implementation("eager")
            except Exception as err:  # transformers raises several types here
                raise AttngradError(
                    f"{type(model).__name__} cannot use eager attention, so it returns no attention maps ({err})"
                ) from None
        self.model = model.eval()
        size = getattr(config, "image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.preprocessor = preprocessor or Preprocessor(resize=size)
        id2label = getattr(config, "id2label", None) or {}
        n = getattr(config, "num_labels", len(id2label))
        self.labels = labels or [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(n)]
        patch = getattr(config, "patch_size", 16)
        self.patch_size = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self.special_tokens = {"cls": 0}
        if getattr(config, "model_type", "") == "deit":  # every DeiT embedding has a distillation token
            self.special_tokens["distillation"] = 1

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str | None = None) -> "HFAdapter":
        """Load a local model folder, or a Hub model by name (when online)."""
        from transformers import AutoModelForImageClassification
        from transformers.image_processing_base import ImageProcessingMixin
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = Path(name_or_path)
        if path.exists():
            if not path.is_dir() or not (path / "config.json").exists():
                raise AttngradError(f"{path}: not a Hugging Face model folder (no config.json)")
            if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
                raise AttngradError(f"{path}: no weights (model.safetensors or pytorch_model.bin); copy them in")
        try:
            model = AutoModelForImageClassification.from_pretrained(str(name_or_path), attn_implementation="eager")
        except (OSError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise AttngradError(
                f"cannot load image classifier {name_or_path!r}: {first}; pass a local model folder, "
                "or a Hub name when online"
            ) from None
        try:
            proc_cfg, _ = ImageProcessingMixin.get_image_processor_dict(str(name_or_path))
        except (OSError, ValueError, json.JSONDecodeError):
            proc_cfg = None
        preprocessor = Preprocessor.from_hf(proc_cfg) if proc_cfg else None
        if device is not None:
            model = model.to(device)
        return cls(model, preprocessor)

    def forward(self, pixel_values: torch.Tensor) -> ForwardOutput:
        out = self.model(pixel_values=pixel_values, output_attentions=True)
        return ForwardOutput(out.logits, self.check_attentions(getattr(out, "attentions", None)))

    @contextmanager
    def override_attention(self, maps: Sequence[torch.Tensor]) -> Iterator[None]:
        _register_override()
        config = self.model.config
        previous = config._attn_implementation
        _override_state.update(maps=list(maps), counter=itertools.count())
        config._attn_implementation = _OVERRIDE_NAME
        try:
            yield
        finally:
            config._attn_implementation = previous
            _override_state.clear()
