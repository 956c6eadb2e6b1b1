"""The multi-class images the demo and the comparison page explain, and where they are.

``el1`` (zebra + elephant) and ``catdog`` (dog + cat) ship inside the package. The other
multi-class images of the paper's figures are read, when present, from a folder given by
the ``ATTNGRAD_MULTICLASS`` environment variable, else from ``../shared/data/multiclass``
beside a source checkout; they are explained for the model's two top classes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .io import IMAGE_SUFFIXES, samples_folder

#: Image file shipped in ``attngrad/assets/images`` -> the two classes it contains.
CASES = {
    "el1.jpg": ("zebra", "African elephant"),
    "catdog.png": ("bull mastiff", "tiger cat"),
}


def asset_image(name: str) -> Path:
    """Path of an image shipped with the package (``el1.jpg``, ``catdog.png``, ImageNet samples)."""
    return samples_folder() / name


def multiclass_folder() -> Path | None:
    """``$ATTNGRAD_MULTICLASS``, else ``../shared/data/multiclass`` beside the source checkout, if it exists."""
    env = os.environ.get("ATTNGRAD_MULTICLASS")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multiclass"
    return beside if beside.is_dir() else None


def extra_multiclass_images(folder: str | Path | None = None) -> list[Path]:
    """The images of ``folder`` (default :func:`multiclass_folder`) not already in :data:`CASES`, sorted
    (the image files :data:`attngrad.io.IMAGE_SUFFIXES` names, as everywhere else)."""
    folder = Path(folder) if folder is not None else multiclass_folder()
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in CASES)
