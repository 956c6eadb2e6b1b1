"""What the image Explainer returns: predictions and explanations (maps + what produced them).

Display images are lazy (:class:`DisplayImages`): built on first access, once per batch
and shared by every method's result, so explaining without showing costs nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, overload

import numpy as np
import torch
from PIL import Image


@dataclass
class Prediction:
    """One of an image's top-k classes."""

    index: int
    label: str
    probability: float
    logit: float


class DisplayImages(Sequence[Image.Image]):
    """A list of PIL images made on first access by ``build`` (then kept); behaves like a list."""

    def __init__(self, build: Callable[[], list[Image.Image]] | Sequence[Image.Image]):
        if callable(build):
            self._build: Callable[[], list[Image.Image]] | None = build
            self._images: list[Image.Image] | None = None
        else:
            self._build, self._images = None, list(build)

    @property
    def built(self) -> bool:
        """Whether the images exist yet."""
        return self._images is not None

    def _all(self) -> list[Image.Image]:
        if self._images is None:
            assert self._build is not None
            self._images, self._build = list(self._build()), None
        return self._images

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> list[Image.Image]: ...

    def __getitem__(self, index):
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[Image.Image]:
        return iter(self._all())

    def __repr__(self) -> str:
        return f"DisplayImages({len(self)} images)" if self.built else "DisplayImages(not built yet)"


class MapResult:
    """What image and text results share: ``maps`` (B, ...), ``targets``, ``contrasts``, ``labels``."""

    maps: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    labels: list[str]

    @property
    def target_names(self) -> list[str]:
        return [self.labels[i] for i in self.targets.tolist()]

    @property
    def contrast_names(self) -> list[str] | None:
        return None if self.contrasts is None else [self.labels[i] for i in self.contrasts.tolist()]

    def normalized(self) -> torch.Tensor:
        """``S / max|S|`` per item: values in [-1, 1], sign kept (method.md, "Display")."""
        peak = self.maps.abs().flatten(1).amax(dim=1).clamp(min=torch.finfo(self.maps.dtype).tiny)
        return self.maps / peak.view(-1, *[1] * (self.maps.ndim - 1))

    def numpy(self) -> np.ndarray:
        return self.maps.detach().cpu().numpy()


@dataclass
class Explanation(MapResult):
    """Maps for a batch, with what produced them.

    Attributes:
        maps: (B, gh, gw) raw scores on the patch grid (unnormalised; sign kept).
        logits: (B, C).
        targets: (B,) explained classes; ``contrasts`` (B,) for two-class losses, else ``None``.
        method, loss: names.
        labels: the model's class names.
        images: the images as the model saw them (resized/cropped RGB), for display; a lazy
            list (:class:`DisplayImages`) built on first access.
    """

    maps: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    method: str
    loss: str
    labels: list[str]
    images: Sequence[Image.Image]
