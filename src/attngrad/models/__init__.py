"""Model adapters: load or wrap a Transformer; families are found through a registry.

Registered here: Hugging Face image classifiers (:class:`HFAdapter`) and timm Vision
Transformers (:class:`TimmAdapter`, loaded as ``"timm:NAME"``). Other packages
(text, language models, CLIP) register their own families the same way; see
docs/adding-a-model-family.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import AttngradError
from .base import ForwardOutput, ImageAdapter, ModelAdapter
from .hf import HFAdapter, HFModelAdapter, _is_hf_model
from .preprocess import Preprocessor
from .registry import AdapterEntry, find_adapter, find_scheme, register_adapter, registered_adapters
from .timm_vit import TimmAdapter, imagenet_labels

__all__ = [
    "DEFAULT_MODEL",
    "AdapterEntry",
    "ForwardOutput",
    "HFAdapter",
    "HFModelAdapter",
    "ImageAdapter",
    "ModelAdapter",
    "Preprocessor",
    "TimmAdapter",
    "check_device",
    "find_adapter",
    "imagenet_labels",
    "load_model",
    "register_adapter",
    "registered_adapters",
    "wrap_model",
]

#: The ViT-Ti/16 (ImageNet-1k) shipped inside the package, so the demo works offline.
DEFAULT_MODEL = Path(str(resources.files("attngrad").joinpath("assets/models/vit-tiny-patch16-224")))


def _is_timm_model(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


# --- the families: one line each --------------------------------------------------------
register_adapter("timm", TimmAdapter, match=_is_timm_model, scheme="timm", loader=TimmAdapter.create)
register_adapter("transformers", HFAdapter, match=_is_hf_model)


def wrap_model(model: nn.Module | ModelAdapter) -> ModelAdapter:
    """The adapter for an already-built model, found in the registry (an adapter is returned as is)."""
    if isinstance(model, ModelAdapter):
        return model
    return find_adapter(model).adapter(model)


def check_device(device: torch.device | str | None) -> torch.device | None:
    """A valid, present device, or a clear :class:`AttngradError` (``"banana"``, ``"cuda:7"`` when absent)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise AttngradError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise AttngradError(f"device {device!r}: no CUDA GPU is available here; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise AttngradError(f"device {device!r}: this machine has CUDA devices 0..{count - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise AttngradError(f"device {device!r}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise AttngradError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def load_model(
    name_or_path: str | Path | None = None,
    device: torch.device | str | None = None,
    checkpoint: str | Path | None = None,
) -> ModelAdapter:
    """Load a model by path or name.

    ``None`` gives the shipped ViT-Ti; ``"SCHEME:NAME"`` a registered loader (``"timm:NAME"``:
    a timm model, weights from ``checkpoint``, which is required); anything else a Hugging
    Face folder or Hub name.
    """
    device = check_device(device)
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    name = str(name_or_path)
    scheme, sep, rest = name.partition(":")
    entry = find_scheme(scheme) if sep and len(scheme) > 1 else None
    if entry is not None and entry.loader is not None:
        return entry.loader(rest, checkpoint=checkpoint, device=device)
    if checkpoint is not None:
        raise AttngradError("--checkpoint applies to timm:NAME models only; a Hugging Face folder has its own weights")
    return HFAdapter.from_pretrained(name_or_path, device=device)


