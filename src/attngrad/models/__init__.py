"""Model adapters: load or wrap a Hugging Face or timm Vision Transformer."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn

from .base import ForwardOutput, ModelAdapter
from .hf import HFAdapter
from .preprocess import Preprocessor
from .timm_vit import TimmAdapter, imagenet_labels

__all__ = [
    "DEFAULT_MODEL",
    "ForwardOutput",
    "HFAdapter",
    "ModelAdapter",
    "Preprocessor",
    "TimmAdapter",
    "imagenet_labels",
    "load_model",
    "wrap_model",
]

#: The ViT-Ti/16 (ImageNet-1k) shipped inside the package, so the demo works offline.
DEFAULT_MODEL = Path(str(resources.files("attngrad").joinpath("assets/models/vit-tiny-patch16-224")))


def wrap_model(model: nn.Module | ModelAdapter) -> ModelAdapter:
    """Pick the adapter for an already-built model (Hugging Face ``PreTrainedModel`` or timm ViT)."""
    if isinstance(model, ModelAdapter):
        return model
    if hasattr(model, "config") and hasattr(model, "set_attn_implementation"):
        return HFAdapter(model)
    return TimmAdapter(model)


def load_model(
    name_or_path: str | Path | None = None,
    device: torch.device | str | None = None,
    checkpoint: str | Path | None = None,
) -> ModelAdapter:
    """Load a model by path or name.

    ``None`` gives the shipped ViT-Ti; ``"timm:NAME"`` a timm model (weights from
    ``checkpoint``); anything else a Hugging Face folder or Hub name.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    name = str(name_or_path)
    if name.startswith("timm:"):
        return TimmAdapter.create(name[len("timm:"):], checkpoint=checkpoint, device=device)
    return HFAdapter.from_pretrained(name_or_path, device=device)
