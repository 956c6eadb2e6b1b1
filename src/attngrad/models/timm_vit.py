"""Adapter over timm Vision Transformers (``timm.models.VisionTransformer`` and relatives).

Fused attention is switched off so the maps exist; a forward hook on each
block's ``attn.attn_drop`` reads them (they stay in the autograd graph) and,
for attention transfer, replaces them with stored maps.
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from .base import ForwardOutput, ImageAdapter
from .preprocess import Preprocessor


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names (short forms, standard index order)."""
    text = resources.files("attngrad").joinpath("assets/imagenet_classes.txt").read_text()
    return text.splitlines()


class TimmAdapter(ImageAdapter):
    """Wrap a timm ViT-style model: ``model.blocks[i].attn`` with ``fused_attn`` and ``attn_drop``."""

    def __init__(self, model: nn.Module, preprocessor: Preprocessor | None = None, labels: list[str] | None = None):
        blocks = getattr(model, "blocks", None)
        if blocks is None or not all(hasattr(getattr(b, "attn", None), "attn_drop") for b in blocks):
            raise AttngradError(
                f"{type(model).__name__} is not a supported timm model: expected a Vision Transformer "
                "with blocks[i].attn.attn_drop (vit_*, deit_*)"
            )
        for block in blocks:
            block.attn.fused_attn = False
        self.model = model.eval()
        self._drops = [b.attn.attn_drop for b in blocks]
        self.preprocessor = preprocessor or Preprocessor.from_timm(getattr(model, "pretrained_cfg", {}) or {})
        num_classes = getattr(model, "num_classes", 0)
        self.labels = labels or (imagenet_labels() if num_classes == 1000 else [f"class_{i}" for i in range(num_classes)])
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        if patch is None:
            raise AttngradError(f"{type(model).__name__} has no patch_embed.patch_size; expected a timm Vision Transformer")
        self.patch_size = (patch, patch) if isinstance(patch, int) else tuple(patch)
        prefix = getattr(model, "num_prefix_tokens", 1)
        self.special_tokens = {"cls": 0}
        if prefix >= 2 and getattr(model, "dist_token", None) is not None:
            self.special_tokens["distillation"] = 1
        for i in range(len(self.special_tokens), prefix):
            self.special_tokens[f"register{i - len(self.special_tokens)}"] = i

    @classmethod
    def create(
        cls, name: str, checkpoint: str | Path | None = None, device: torch.device | str | None = None
    ) -> "TimmAdapter":
        """``timm.create_model(name)`` with weights from a checkpoint file (.safetensors or .pth)."""
        try:
            import timm
        except ImportError:
            raise AttngradError("timm is not installed; pip install 'attngrad[timm]'") from None
        try:
            model = timm.create_model(name, pretrained=False)
        except RuntimeError as err:
            raise AttngradError(f"timm has no model {name!r} ({err}); see timm.list_models('vit_*')") from None
        if checkpoint is None:
            raise AttngradError(
                f"timm:{name} needs its weights: pass --checkpoint FILE (.safetensors or .pth); "
                "without one the model would have random weights"
            )
        path = Path(checkpoint)
        if not path.is_file():
            raise AttngradError(f"{path}: no such checkpoint file")
        state: object
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # safetensors, pickle and zip raise many types on a bad file
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise AttngradError(
                f"{path}: not a readable checkpoint ({first}); pass a .safetensors or .pth file of {name}'s weights"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict", state.get("model")), dict):
            state = state.get("state_dict", state.get("model"))
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise AttngradError(f"{path}: not a checkpoint (no table of weight tensors); pass {name}'s weights")
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise AttngradError(f"{path}: weights do not fit {name} ({str(err).splitlines()[0]})") from None
        if device is not None:
            model = model.to(device)
        return cls(model)

    @property
    def num_layers(self) -> int:
        return len(self._drops)

    @contextmanager
    def _hooks(self, maps: Sequence[torch.Tensor | None] | None, record: list[torch.Tensor]) -> Iterator[None]:
        def make_hook(layer: int):
            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
                stored = None if maps is None else maps[layer]
                if stored is not None:
                    output = stored.to(output.dtype)
                record.append(output)
                return output if stored is not None else None

            return hook

        handles = [drop.register_forward_hook(make_hook(i)) for i, drop in enumerate(self._drops)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, pixel_values: torch.Tensor) -> ForwardOutput:
        record: list[torch.Tensor] = []
        with self._hooks(getattr(self, "_override", None), record):
            logits = self.model(pixel_values)
        return ForwardOutput(logits, self.check_attentions(record))

    @contextmanager
    def override_attention(self, maps: Sequence[torch.Tensor | None]) -> Iterator[None]:
        self._override = list(maps)
        try:
            yield
        finally:
            del self._override
