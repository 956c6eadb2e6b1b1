"""The grid pointing game's measures: how much of a map's attribution falls inside a region.

A map of any resolution (a patch grid, or pixels for full LRP) covers the model input; each of
its elements is a rectangle of the input, and :func:`cell_weights` gives the share of that
rectangle inside each grid cell, so cells that do not align with patches (a 3 x 3 grid on a
14 x 14 patch grid) are weighted by overlap instead of being rounded.

- pointing score (Böhle, Fritz & Schiele, CVPR 2021; Rao et al., CVPR 2022): the positive
  attribution inside the explained cell over all positive attribution, ``sum_in max(S, 0) /
  sum max(S, 0)`` (higher is better; a uniform map scores the cell's area share, 1/n² on an n x n
  grid). Unsigned maps are >= 0, so the positive part is the map itself.
- negative share (signed maps): the share of the negative attribution ``max(-S, 0)`` that falls
  on the *other* cells (higher is better): the paper's claim for ``complete`` is that it marks the
  other classes as opposing.
- share on a cell (controls): the positive attribution on a given cell (a blank cell: lower is better).
"""

from __future__ import annotations

from typing import ClassVar

import torch


def cell_weights(map_shape: tuple[int, int], n: int) -> torch.Tensor:
    """(n*n, h, w): for each cell (row-major) the fraction of each map element's area inside it.

    Map elements and cells are laid on the unit square; the cells split it into n equal rows and
    columns (the canvas's pixel split rounds to whole pixels, a difference below one pixel).
    """
    h, w = map_shape

    def overlap(elements: int) -> torch.Tensor:  # (n, elements): share of each element's span in each cell band
        lo = torch.arange(elements, dtype=torch.float64) / elements
        hi = lo + 1.0 / elements
        c_lo = torch.arange(n, dtype=torch.float64)[:, None] / n
        c_hi = c_lo + 1.0 / n
        return ((torch.minimum(hi, c_hi) - torch.maximum(lo, c_lo)).clamp(min=0) * elements).float()

    rows, cols = overlap(h), overlap(w)  # (n, h), (n, w)
    return (rows[:, None, :, None] * cols[None, :, None, :]).reshape(n * n, h, w)


def _shares(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, n*n): the share of each item's non-negative ``values`` (B, h, w) on each cell (NaN for an empty map)."""
    per_cell = torch.einsum("bhw,chw->bc", values.double(), weights.double())
    total = values.double().flatten(1).sum(dim=1, keepdim=True)
    return (per_cell / total).float().masked_fill(total == 0, float("nan"))


class PointingGame:
    """Pointing score and negative share of maps (B, h, w) for the explained cells (B,) of n x n grids.

    ``higher_is_better`` states the direction of both measures. Works on batches; an all-zero
    positive (negative) part gives NaN for that item's score (share), never a number.
    """

    higher_is_better: ClassVar[bool] = True

    def __init__(self, n: int):
        self.n = n

    def __call__(self, maps: torch.Tensor, cells: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = maps.detach().float().cpu()
        cells = cells.cpu().long()
        weights = cell_weights((maps.shape[-2], maps.shape[-1]), self.n)
        rows = torch.arange(maps.shape[0])
        positive = _shares(maps.clamp(min=0), weights)  # (B, n*n)
        negative = _shares((-maps).clamp(min=0), weights)
        return {
            "pointing": positive[rows, cells],
            "negative_elsewhere": 1.0 - negative[rows, cells],
            "positive_per_cell": positive,
        }
