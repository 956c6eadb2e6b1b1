"""External attention guidance (Cui, Fan & Chen, experiment 3; method.md "Experiments", item 3).

A single-class image explained with ``complete`` looks poor because the other 999
classes pull the gradient in mixed directions; stitching a guide image of another
class beside it gives the loss one clear opposing class. The stitching geometry and
the guided explanation live in the core module :mod:`attngrad.stitch` (the Explainer's
``guide=`` uses them too); the galleries in :mod:`attngrad.gallery`. This module is
the experiment's public home and re-exports them.
"""

from __future__ import annotations

from ..gallery import IMAGE_SUFFIXES, class_image, default_gallery, gallery_index, resolve_gallery, resolve_guide
from ..stitch import (
    LAYOUTS,
    GuidedExplanation,
    Region,
    check_layout,
    crop_image,
    crop_region,
    explain_guided,
    stitch,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "GuidedExplanation",
    "Region",
    "check_layout",
    "class_image",
    "crop_image",
    "crop_region",
    "default_gallery",
    "explain_guided",
    "gallery_index",
    "resolve_gallery",
    "resolve_guide",
    "stitch",
]
