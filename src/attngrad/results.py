"""What explainers return: the base of every family's result (:class:`Result`); the image Explainer's predictions and explanations.

Display images are lazy (:class:`DisplayImages`): built on first access, once per batch
and shared by every method's result, so explaining without showing costs nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence, overload

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


def maps_alias(field: str) -> Any:
    """A ``maps`` property that reads and writes ``field``, for a result whose scores have a name of their own."""

    def get(self: Any) -> torch.Tensor:
        return getattr(self, field)

    def put(self: Any, value: torch.Tensor) -> None:
        setattr(self, field, value)

    return property(get, put, doc=f"``{field}``, under the name every result uses.")


class Spot(NamedTuple):
    """One of an item's highest-scored positions (:meth:`Result.top`).

    Attributes:
        position: index into the item's own positions, as :meth:`Result.scores` lists them: the
            flattened patch grid for image maps (``row, col = divmod(position, grid[1])``), the
            item's tokens for token rows (``tokens[position]``, padding never counted).
        name: what the position is: the token's text, or ``"(row, col)"`` on a grid.
        score: its raw score (sign kept).
    """

    position: int
    name: str
    score: float


class Result:
    """What every family's result shares, so that one explainer's results read like another's.

    Attributes:
        maps: (B, ...) raw scores per item, unnormalised, sign kept; each family's class says what an
            item and its positions are (docs/api.md has the table).
        method, loss: the names of what produced them.

    Reading an item ``i``: :meth:`scores` its scores over its own positions (1-D: padding dropped,
    grids flattened), :meth:`position_names` what each position is, :meth:`top` its highest-scored
    positions, :attr:`grid` the patch grid (``None`` for token rows); :meth:`normalized` and
    :meth:`numpy` cover the whole batch.
    """

    maps: torch.Tensor
    method: str
    loss: str

    @property
    def grid(self) -> tuple[int, int] | None:
        """``(gh, gw)``: the patch grid of an image map; ``None`` when the positions are tokens."""
        return None

    def normalized(self) -> torch.Tensor:
        """``S / max|S|`` per item: values in [-1, 1], sign kept (method.md, "Display")."""
        peak = self.maps.abs().nan_to_num(0.0).flatten(1).amax(dim=1).clamp(min=torch.finfo(self.maps.dtype).tiny)
        return self.maps / peak.view(-1, *[1] * (self.maps.ndim - 1))

    def numpy(self) -> np.ndarray:
        return self.maps.detach().cpu().numpy()

    def scores(self, index: int) -> torch.Tensor:
        """Item ``index``'s raw scores over its own positions, in order (1-D; grids flattened row by row)."""
        return self.maps[index].flatten()

    def position_names(self, index: int) -> list[str]:
        """What each of item ``index``'s positions (:meth:`scores`) is: token texts, or ``"(row, col)"`` on a grid."""
        if self.grid is not None:
            return [f"({r}, {c})" for r in range(self.grid[0]) for c in range(self.grid[1])]
        return [str(p) for p in range(self.scores(index).numel())]

    def _ranked(self, index: int) -> torch.Tensor | None:
        """(P,) bool: which of item ``index``'s positions :meth:`top` may list (``None``: all of them)."""
        return None

    def top(self, index: int, k: int = 5) -> list[Spot]:
        """Item ``index``'s ``k`` highest-scored positions, best first (ties: the earlier position first).

        Positions a map does not score (special tokens of text encoders, decoder inputs after the
        explained position, NaN scores) are never listed; padding is not among an item's positions at all.
        """
        return self._spots(self.scores(index), self.position_names(index), self._ranked(index), k)

    @staticmethod
    def _spots(scores: torch.Tensor, names: list[str], keep: torch.Tensor | None, k: int) -> list[Spot]:
        """The ``k`` best of ``scores`` (1-D) among ``keep`` (``None``: all), best first, ties in position order."""
        scores = scores.detach().cpu()
        candidates = torch.arange(scores.numel()) if keep is None else keep.cpu().nonzero().flatten()
        candidates = candidates[~scores[candidates].isnan()]  # a NaN is no score (torch sorts it first)
        order = torch.sort(scores[candidates], descending=True, stable=True).indices[: max(k, 0)]
        return [Spot(p, names[p], float(scores[p])) for p in candidates[order].tolist()]


class MapResult(Result):
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

    As a :class:`Result`: an item is an image, its positions the patch grid's cells (row by row).
    """

    maps: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    method: str
    loss: str
    labels: list[str]
    images: Sequence[Image.Image]

    @property
    def grid(self) -> tuple[int, int]:
        return (self.maps.shape[-2], self.maps.shape[-1])
