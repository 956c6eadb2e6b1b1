"""Pictures with the paper's display rules (method.md, "Display").

Each map is normalised by ``max|S|`` so values lie in [-1, 1] and the sign
survives; a diverging colormap (blue, white at 0, red) on the fixed range
[-1, 1]; bilinear upsampling of the patch grid to the image; the image laid
over the heatmap with partial transparency; a colour bar. Colours compare
regions within one image, never across images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

CMAP = "bwr"
NORM = Normalize(vmin=-1.0, vmax=1.0)


def normalize(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """``S / max|S|`` for one map (any shape); an all-zero map stays zero."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    peak = np.abs(s).max()
    return s / peak if peak > 0 else s


def upsample(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a 2-D map to ``(height, width)``."""
    t = torch.as_tensor(scores, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def heatmap(scores: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB float image (H, W, 3) in [0, 1]: the normalised map upsampled and coloured."""
    colours = matplotlib.colormaps[CMAP](NORM(upsample(normalize(scores), size)))
    return colours[..., :3]


def overlay(image: Image.Image, scores: torch.Tensor | np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image laid over the coloured map: ``alpha * heatmap + (1 - alpha) * image``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    blend = alpha * heatmap(scores, rgb.shape[:2]) + (1 - alpha) * rgb
    return Image.fromarray((blend * 255).round().astype(np.uint8))


def add_colorbar(fig: Figure, axes) -> None:
    """A colour bar for the fixed [-1, 1] range, labelled with what the signs mean."""
    mappable = matplotlib.cm.ScalarMappable(norm=NORM, cmap=CMAP)
    bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02, ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label("S / max|S|  (red: supports, blue: opposes)")


def grid(
    images: Sequence[Image.Image],
    maps: Sequence[Sequence[torch.Tensor | np.ndarray | None]],
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    cell_titles: Sequence[Sequence[str]] | None = None,
    show_image: bool = True,
    cell_size: float = 2.4,
) -> Figure:
    """A figure of overlays: row ``i`` shows ``images[i]`` (first column) then ``maps[i][j]``.

    ``None`` entries leave a blank cell. One shared colour bar on [-1, 1].
    """
    rows = len(maps)
    cols = max(len(r) for r in maps) + int(show_image)
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size * cols + 1.2, cell_size * rows + 0.3), squeeze=False)
    for i, row in enumerate(maps):
        if show_image:
            axes[i, 0].imshow(images[i])
        for j, m in enumerate(row):
            if m is not None:
                axes[i, j + int(show_image)].imshow(overlay(images[i], m))
            if cell_titles is not None:
                axes[i, j + int(show_image)].set_title(cell_titles[i][j], fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        if i < len(row_titles):
            axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    for j, title in enumerate(col_titles):
        axes[0, j].set_title(title, fontsize=9)
    add_colorbar(fig, axes)
    return fig


def save_overlay(path: str | Path, image: Image.Image, scores: torch.Tensor | np.ndarray, title: str = "") -> Path:
    """One overlay with a title and a colour bar, saved as PNG."""
    fig = grid([image], [[scores]], cell_titles=[[title]], show_image=False, cell_size=3.6)
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure as PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
