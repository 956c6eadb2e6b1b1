"""Grids of images for the pointing game: which images qualify, seeded drawing, and the canvases.

Protocol (after Böhle, Fritz & Schiele, CVPR 2021, and Rao et al., CVPR 2022, who tile confidently
classified images of different classes into 2 x 2 grids; the exact cutoff differs between their
papers, so ours is an option): an image qualifies when the model, seeing it alone **at the
resolution it has inside a cell** (what the model sees of it, resized to the cell and back up to
the input size), predicts its true class with probability >= ``min_confidence``. A grid takes
``n * n`` qualifying images of ``n * n`` different classes, drawn with a seeded generator (numpy's
PCG64), so every method is scored on the same grids. With ``blank``, the last cell is a mid-grey
blank (a DiFull-style control: there is nothing to find there) and is not explained.

The canvas has the model's input size; cell ``(r, c)`` spans pixels ``round(c*W/n)..round((c+1)*W/n)``
(columns) and the same for rows; each image is first brought to what the model sees of it alone
(its own preprocessing geometry), then resized into its cell (bicubic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import AttngradError
from ..models.preprocess import Preprocessor

#: The colour of a blank cell (mid-grey).
BLANK = (128, 128, 128)


@dataclass(frozen=True)
class Grid:
    """One grid: per cell (row-major) the index of its image among the candidates (-1: blank) and its class."""

    images: tuple[int, ...]
    labels: tuple[int, ...]


def cell_boxes(size: tuple[int, int], n: int) -> list[tuple[int, int, int, int]]:
    """Pixel boxes ``(left, top, right, bottom)`` of the n x n cells of a ``(height, width)`` canvas, row-major."""
    h, w = size
    xs = [round(k * w / n) for k in range(n + 1)]
    ys = [round(k * h / n) for k in range(n + 1)]
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(n) for c in range(n)]


def input_size(pre: Preprocessor) -> tuple[int, int]:
    """The model input's ``(height, width)`` (a fixed resize or crop is needed for a grid)."""
    size = pre.crop or pre.resize
    if size is None:
        raise AttngradError("the grid pointing game needs a model with a fixed input size (a resize or a crop)")
    return size


def canvas(images: Sequence[Image.Image | None], size: tuple[int, int], n: int, resample: int) -> Image.Image:
    """The n x n grid of ``images`` (already at the model's input geometry; ``None``: blank) on one canvas."""
    h, w = size
    out = Image.new("RGB", (w, h), BLANK)
    for img, (left, top, right, bottom) in zip(images, cell_boxes(size, n)):
        if img is not None:
            out.paste(img.resize((right - left, bottom - top), resample=resample, reducing_gap=None), (left, top))
    return out


def at_cell_resolution(img: Image.Image, size: tuple[int, int], n: int, resample: int) -> Image.Image:
    """``img`` (at the input geometry) resized to one cell and back: the detail it keeps inside a grid."""
    left, top, right, bottom = cell_boxes(size, n)[0]
    small = img.resize((right - left, bottom - top), resample=resample, reducing_gap=None)
    return small.resize((size[1], size[0]), resample=resample, reducing_gap=None)


def qualify(
    forward: Callable[[torch.Tensor], torch.Tensor],
    pre: Preprocessor,
    images: Sequence[Image.Image],
    labels: Sequence[int],
    n: int,
    *,
    min_confidence: float,
    batch_size: int = 32,
) -> np.ndarray:
    """The probability of the true class of each image seen alone at cell resolution (images at the input geometry);
    images with ``>= min_confidence`` *and* the top prediction qualify (``probs >= min_confidence`` and correct)."""
    size = input_size(pre)
    probs = np.zeros(len(images), dtype=np.float32)
    correct = np.zeros(len(images), dtype=bool)
    for start in range(0, len(images), batch_size):
        chunk = [at_cell_resolution(im, size, n, pre.resample) for im in images[start : start + batch_size]]
        unit = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in chunk])).permute(0, 3, 1, 2)
        with torch.no_grad():
            p = forward(pre.normalize(unit * pre.rescale)).float().softmax(dim=-1).cpu()
        want = torch.as_tensor(labels[start : start + batch_size])
        probs[start : start + len(chunk)] = p[torch.arange(len(chunk)), want].numpy()
        correct[start : start + len(chunk)] = (p.argmax(dim=-1) == want).numpy()
    return np.where(correct, probs, 0.0).astype(np.float32)


def draw(labels: Sequence[int], count: int, n: int, *, seed: int, blank: bool = False) -> list[Grid]:
    """``count`` grids of n*n candidates (indices into ``labels``) of different classes, seeded; with ``blank``
    the last cell is blank (-1)."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    cells = n * n - int(blank)
    if len(by_class) < cells:
        raise AttngradError(f"a {n}x{n} grid needs images of {cells} different classes, but the qualifying images "
                            f"cover {len(by_class)}; lower --min-confidence or give more images")
    rng = np.random.default_rng(seed)
    classes = sorted(by_class)
    grids = []
    for _ in range(count):
        chosen = rng.choice(len(classes), size=cells, replace=False)
        picks = [by_class[classes[k]][int(rng.integers(len(by_class[classes[k]])))] for k in chosen]
        labs = [classes[k] for k in chosen]
        if blank:
            picks.append(-1)
            labs.append(-1)
        grids.append(Grid(tuple(picks), tuple(labs)))
    return grids
