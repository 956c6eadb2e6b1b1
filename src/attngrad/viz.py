"""Pictures with the paper's display rules (method.md, "Display").

Each map of a *signed* method is normalised by ``max|S|`` so values lie in [-1, 1] and the
sign survives; a map of an *unsigned* method is stretched to [0, 1] by ``(S - min) / (max - min)``
(its authors' display: rollout-type maps carry a positive offset that would otherwise tint the
whole image); a diverging colormap (blue, white at 0, red) on the fixed range
[-1, 1]; bilinear upsampling of the patch grid to the image; the image laid
over the heatmap with partial transparency; a colour bar. Colours compare
regions within one image, never across images.

What red means depends on the method: for a *signed* method (``complete``: the sign says
whether a region pushes the model towards the class or away from it) red supports the
class and blue opposes it; for an *unsigned* one (``gae``, ``absolute``, ``rollout``,
``raw_attention`` ...: every value is >= 0) red is only magnitude, and there is no blue.
Every caption and colour bar says which (:func:`legend`); callers pass each map's sign (``signed``), as
:func:`attngrad.methods.is_signed` gives it: pictures know nothing of the method registry.
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

SIGNED_LEGEND = "red supports the class, blue opposes it"
UNSIGNED_LEGEND = "unsigned: red = magnitude"


def legend(signed: bool | None) -> str:
    """What red (and blue) mean in a map whose sign means support (``True``) or not (``False``); ``""`` unknown."""
    return "" if signed is None else SIGNED_LEGEND if signed else UNSIGNED_LEGEND


def _bar_label(signs: Sequence[bool | None]) -> str:
    known = {s for s in signs if s is not None}
    if known == {False}:
        return "(S - min) / (max - min)  (unsigned maps: red = magnitude)"
    if known == {True, False}:
        return "signed maps: S / max|S|, red supports, blue opposes;\nunsigned maps: (S - min) / (max - min), red = magnitude"
    return "S / max|S|  (red: supports, blue: opposes)"


def wrap_label(text: str, width: int = 18) -> str:
    """A class name for a figure title, wrapped onto several lines when long (never cut)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False)) or text


def normalize(scores: torch.Tensor | np.ndarray, *, signed: bool = True) -> np.ndarray:
    """One map (any shape) for display: ``S / max|S|`` (signed), or ``(S - min) / (max - min)``
    (``signed=False``); an all-zero (unsigned: constant) map becomes zero."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if not signed:
        span = s.max() - s.min() if s.size else 0.0
        return (s - s.min()) / span if span > 0 else np.zeros_like(s)
    peak = np.abs(s).max() if s.size else 0.0
    return s / peak if peak > 0 else s


def upsample(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a 2-D map to ``(height, width)``."""
    t = torch.as_tensor(scores, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def heatmap(scores: torch.Tensor | np.ndarray, size: tuple[int, int], *, signed: bool = True) -> np.ndarray:
    """RGB float image (H, W, 3) in [0, 1]: the normalised map upsampled and coloured."""
    colours = matplotlib.colormaps[CMAP](NORM(upsample(normalize(scores, signed=signed), size)))
    return colours[..., :3]


def overlay(
    image: Image.Image, scores: torch.Tensor | np.ndarray, alpha: float = 0.5, *, signed: bool | None = True
) -> Image.Image:
    """The image laid over the coloured map: ``alpha * heatmap + (1 - alpha) * image``; an unsigned
    map (``signed=False``) is min-max stretched (:func:`normalize`); ``None`` (unknown) is shown as signed."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    signed = signed is not False
    blend = alpha * heatmap(scores, rgb.shape[:2], signed=signed) + (1 - alpha) * rgb
    return Image.fromarray((blend * 255).round().astype(np.uint8))


def add_colorbar(fig: Figure, axes, signs: Sequence[bool | None] = ()) -> None:
    """A colour bar for the fixed [-1, 1] range, labelled with what the colours mean for maps whose
    ``signs`` are given (signed: red supports, blue opposes; unsigned: red = magnitude; none given: signed)."""
    mappable = matplotlib.cm.ScalarMappable(norm=NORM, cmap=CMAP)
    bar = fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.02, ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label(_bar_label(signs))


def _caption(signed: bool | None) -> str:
    """What red means for a map of this sign, on two short lines (printed under its column); ``""`` if unknown."""
    if signed is None:
        return ""
    return "red: supports\nblue: opposes" if signed else "unsigned:\nred = magnitude"


def grid(
    images: Sequence[Image.Image],
    maps: Sequence[Sequence[torch.Tensor | np.ndarray | None]],
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    cell_titles: Sequence[Sequence[str]] | None = None,
    show_image: bool = True,
    cell_size: float = 2.4,
    signs: Sequence[bool | None] = (),
) -> Figure:
    """A figure of overlays: row ``i`` shows ``images[i]`` (first column) then ``maps[i][j]``.

    ``None`` entries leave a blank cell. One shared colour bar on [-1, 1].

    ``signs[j]`` says whether the maps of column ``j`` are signed (``True``), magnitudes (``False``)
    or unknown (``None``, shown as signed, no caption); under each column a caption says what red
    means (:func:`legend`), and the colour bar's label covers them all
    (:func:`attngrad.methods.is_signed` gives a registered method's sign).
    """
    rows = len(maps)
    cols = max(len(r) for r in maps) + int(show_image)
    offset = int(show_image)
    signs = list(signs) + [None] * (cols - offset - len(signs))
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size * cols + 1.2, cell_size * rows + 0.3), squeeze=False)
    for i, row in enumerate(maps):
        if show_image:
            axes[i, 0].imshow(images[i])
        for j, m in enumerate(row):
            if m is not None:
                axes[i, j + int(show_image)].imshow(overlay(images[i], m, signed=signs[j]))
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
    for j, sign in enumerate(signs):  # under every column: what red means for its maps
        if _caption(sign):
            axes[rows - 1, j + offset].set_xlabel(_caption(sign), fontsize=8)
    add_colorbar(fig, axes, signs)
    return fig


def save_overlay(
    path: str | Path,
    image: Image.Image,
    scores: torch.Tensor | np.ndarray,
    title: str = "",
    *,
    signed: bool | None = None,
) -> Path:
    """One overlay with a title and a colour bar, saved as PNG; a known ``signed`` adds what red means."""
    fig = grid([image], [[scores]], cell_titles=[[title]], show_image=False, cell_size=3.6, signs=[signed])
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure as PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- HTML token colours
# Shared by the text, language-model and encoder-decoder pages: the images' colormap as CSS.

#: The base style of the token pages (coloured token spans and the colour bar).
HTML_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 60em; }
.text { font-size: 1.15em; line-height: 1.9; margin: 0.3em 0 1.2em; }
.text span { padding: 0.1em 0.15em; border-radius: 0.2em; }
.bar { width: 24em; margin-bottom: 2em; }
.bar div { height: 1em; border: 1px solid #999; }
.bar span { display: inline-block; width: 33%; font-size: 0.8em; }
.bar span:nth-of-type(2) { text-align: center; } .bar span:nth-of-type(3) { text-align: right; }
.bar p { font-size: 0.8em; margin: 0.2em 0; }
h2 { font-size: 1em; margin-bottom: 0.2em; } .meta { color: #555; font-size: 0.85em; }
"""


def rgb_colours(values: Sequence[float]) -> list[tuple[int, int, int]]:
    """8-bit RGB colours of normalised values in [-1, 1] on the images' colormap (:data:`CMAP`)."""
    rgba = np.asarray(matplotlib.colormaps[CMAP](NORM(list(values))))
    return [(int(round(r * 255)), int(round(g * 255)), int(round(b * 255))) for r, g, b in rgba[:, :3]]


def ink(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``rgb``."""
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else (255, 255, 255)


def colour_bar_html(caption: str) -> str:
    """A horizontal colour bar for [-1, 1] as an HTML fragment (a CSS gradient of the colormap)."""
    steps = [i / 10 for i in range(-10, 11)]
    stops = ", ".join(f"rgb{c} {100 * (v + 1) / 2:.0f}%" for v, c in zip(steps, rgb_colours(steps)))
    return (
        '<div class="bar"><div style="background: linear-gradient(to right, ' + stops + ')"></div>'
        f"<span>-1</span><span>0</span><span>+1</span><p>{caption}</p></div>"
    )
