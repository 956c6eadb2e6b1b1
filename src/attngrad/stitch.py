"""Stitching an image beside a guide, and explaining it there (Cui, Fan & Chen, experiment 3, external guidance).

A core module: :meth:`attngrad.Explainer.explain_methods` (``guide=``) and
:mod:`attngrad.experiments.guidance` both use it; it imports neither (it takes any object with
an explainer's :class:`Explains` protocol).

A single-class image explained with ``complete`` looks poor because the other
999 classes pull the gradient in mixed directions. Stitching a *guide* image of
another class (the paper uses a zebra) beside it gives the loss one clear
opposing class; the original's class is explained on the stitched input and the
map is cropped back to the original's region.

Geometry (model-agnostic, exact on the patch grid):

* :func:`stitch` builds a canvas **of the original's own size** (width or height
  rounded down to even): each of the two images is resized to one half of it
  (``left-right``: ``W/2 x H`` each, original on the left). The model's own
  preprocessing then treats the canvas as it would treat the original alone:
  a plain resize (Hugging Face ViT) or a resize + centre crop (timm) are both
  symmetric about the centre, so the seam lands on the centre line of the model
  input, i.e. the original occupies exactly the first ``gw/2`` patch columns
  (``right-left``: the last ``gw/2``; ``top-bottom`` / ``bottom-top``: rows).
* :class:`Region` records which half the original is in, as fractions of the
  model input; :meth:`Region.cells` turns it into patch-grid index ranges for any
  grid, and :func:`crop_region` cuts maps with them. On an even grid (14 x 14 for
  ViT-*/16 at 224 px) the crop is exact; on an odd grid the middle column (row),
  which mixes both images, is left out.

Guides can be given as an image (path or PIL) or as a class name, resolved to a
``<wnid>_<class name>.jpg`` file of a gallery folder (see :mod:`attngrad.gallery`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from .errors import AttngradError
from .gallery import resolve_guide
from .io import ImageLike, load_image
from .losses import LossLike
from .results import DisplayImages, Explanation
from .targets import TargetSpec, resolve_targets

if TYPE_CHECKING:
    from .methods import Method
    from .models import ModelAdapter


class Explains(Protocol):
    """What guided explanation needs of an explainer (:class:`attngrad.Explainer` has it); this module
    imports no explainer, so the facade can use it without an import cycle."""

    @property
    def labels(self) -> list[str]: ...

    @property
    def adapter(self) -> "ModelAdapter": ...

    def prepare(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, DisplayImages]: ...

    def explain_methods(self, *args: Any, **kwargs: Any) -> dict[str, Explanation]: ...

#: Layout name -> (axis split: "cols" or "rows", whether the original takes the first half).
LAYOUTS: dict[str, tuple[str, bool]] = {
    "left-right": ("cols", True),
    "right-left": ("cols", False),
    "top-bottom": ("rows", True),
    "bottom-top": ("rows", False),
}

Maps = TypeVar("Maps", torch.Tensor, np.ndarray)


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise AttngradError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return layout


@dataclass(frozen=True)
class Region:
    """Where the original lies in a stitched input: one half, split along ``axis``.

    Attributes:
        layout: the :data:`LAYOUTS` name that produced it.
        axis: ``"cols"`` (side by side) or ``"rows"`` (stacked).
        first: the original is the first (left / top) half.
    """

    layout: str
    axis: str
    first: bool

    @classmethod
    def of(cls, layout: str) -> "Region":
        axis, first = LAYOUTS[check_layout(layout)]
        return cls(layout, axis, first)

    def complement(self) -> "Region":
        """The other half (where the guide lies)."""
        return Region(self.layout, self.axis, not self.first)

    def _span(self, n: int) -> tuple[int, int]:
        """Index range of this half along an axis of ``n`` cells; an odd middle cell belongs to neither."""
        return (0, n // 2) if self.first else ((n + 1) // 2, n)

    def cells(self, gh: int, gw: int) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)`` (end-exclusive) of this half on a ``gh x gw`` grid (patches or pixels)."""
        if self.axis == "cols":
            return (0, gh, *self._span(gw))
        return (*self._span(gh), 0, gw)

    def fractions(self) -> tuple[float, float, float, float]:
        """``(top, bottom, left, right)`` as fractions of the model input."""
        lo, hi = (0.0, 0.5) if self.first else (0.5, 1.0)
        return (0.0, 1.0, lo, hi) if self.axis == "cols" else (lo, hi, 0.0, 1.0)


def stitch(image: ImageLike, guide: ImageLike, layout: str = "left-right") -> tuple[Image.Image, Region]:
    """Compose ``image`` and ``guide`` into one RGB picture of the original's size.

    Each is resized (bicubic) to one half of the canvas; ``layout`` says where the
    original goes: ``left-right`` (original left, guide right), ``right-left``,
    ``top-bottom``, ``bottom-top``. See the module docstring for why the seam is on
    the centre line of the model input.

    Returns:
        the stitched image and the :class:`Region` of the original.
    """
    region = Region.of(layout)
    return _compose(load_image(image), load_image(guide), region), region


def _compose(original: Image.Image, other: Image.Image, region: Region) -> Image.Image:
    """:func:`stitch`'s canvas from two RGB images already loaded, for a region already checked."""
    width, height = original.size
    if region.axis == "cols":
        half = (width // 2, height)
        offsets = ((0, 0), (half[0], 0))
        canvas_size = (2 * half[0], height)
    else:
        half = (width, height // 2)
        offsets = ((0, 0), (0, half[1]))
        canvas_size = (width, 2 * half[1])
    if min(half) < 1:
        raise AttngradError(f"the image is {width}x{height} pixels, too small to stitch; use an image of at least 2x2")
    canvas = Image.new("RGB", canvas_size)
    first, second = (original, other) if region.first else (other, original)
    canvas.paste(first.resize(half, Image.Resampling.BICUBIC), offsets[0])
    canvas.paste(second.resize(half, Image.Resampling.BICUBIC), offsets[1])
    return canvas


def crop_region(maps: Maps, region: Region) -> Maps:
    """Cut the original's part out of maps ``(..., gh, gw)`` of the stitched input (tensor or array)."""
    if maps.ndim < 2:
        raise AttngradError(f"maps must be (..., gh, gw), not shape {tuple(maps.shape)}")
    r0, r1, c0, c1 = region.cells(maps.shape[-2], maps.shape[-1])
    return maps[..., r0:r1, c0:c1]


def crop_image(image: Image.Image, region: Region) -> Image.Image:
    """The original's part of a stitched picture (e.g. the stitched display image)."""
    r0, r1, c0, c1 = region.cells(image.height, image.width)
    return image.crop((c0, r0, c1, r1))


@dataclass
class GuidedExplanation(Explanation):
    """An :class:`Explanation` computed on stitched inputs.

    ``maps`` are the original's region ``(B, gh', gw')`` and ``images`` the originals as the
    model sees them alone (the cropped map is upsampled onto them); ``full_maps`` (B, gh, gw)
    cover the whole stitched input shown in ``stitched_images``; ``logits`` are the stitched
    input's, ``original_logits`` the original's alone.
    """

    full_maps: torch.Tensor
    stitched_images: Sequence[Image.Image]
    original_logits: torch.Tensor
    region: Region
    guide: str = ""


def explain_guided(
    explainer: Explains,
    images: Sequence[ImageLike] | ImageLike | torch.Tensor,
    guide: ImageLike,
    methods: Sequence["str | Method"] = ("complete",),
    *,
    target: TargetSpec = None,
    loss: LossLike = "logit",
    contrast: TargetSpec = None,
    start_layer: int | None = None,
    token: int | str = "cls",
    layout: str = "left-right",
    gallery: str | os.PathLike | None = None,
) -> dict[str, GuidedExplanation]:
    """Explain each image's class on the image stitched beside ``guide``; crop the maps back.

    Targets (and contrasts) given as ``"topK"`` or ``None`` refer to the original image's own
    predictions, not the stitched input's. One forward pass over the originals and the guide
    (no gradients), then one forward + backward over the stitched batch for all methods.

    Raises:
        AttngradError: the guide is classified as one of the explained classes (it would
            guide towards the class itself; pick a guide of another class).
    """
    region = Region.of(layout)  # the layout checked once, before any image is read
    if isinstance(images, torch.Tensor):
        raise AttngradError("guidance stitches pictures: pass image paths or PIL images, not a preprocessed tensor")
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    originals = [load_image(im) for im in images]
    if not originals:
        raise AttngradError("no images given")
    guide_image, guide_name = resolve_guide(guide, explainer.labels, gallery)
    pixel_values, shown = explainer.prepare([*originals, guide_image])
    with torch.no_grad():
        logits = explainer.adapter.forward(pixel_values).logits
    original_logits, guide_class = logits[:-1], int(logits[-1].argmax())
    targets = resolve_targets(target, original_logits, explainer.labels)
    contrasts = None if contrast is None else resolve_targets(contrast, original_logits, explainer.labels)
    if (targets == guide_class).any():
        raise AttngradError(
            f"the guide ({guide_name}) is classified as {explainer.labels[guide_class]!r}, a class being explained; "
            "choose a guide image of another class"
        )
    stitched = [_compose(im, guide_image, region) for im in originals]  # the images loaded above, as they are
    results = explainer.explain_methods(
        stitched, methods, target=targets, loss=loss, contrast=contrasts, start_layer=start_layer, token=token
    )
    return {
        name: GuidedExplanation(
            maps=crop_region(res.maps, region),
            logits=res.logits,
            targets=res.targets,
            contrasts=res.contrasts,
            method=res.method,
            loss=res.loss,
            labels=res.labels,
            images=DisplayImages(lambda: shown[:-1]),
            full_maps=res.maps,
            stitched_images=res.images,
            original_logits=original_logits,
            region=region,
            guide=guide_name,
        )
        for name, res in results.items()
    }
