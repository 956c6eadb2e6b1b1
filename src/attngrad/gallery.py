"""Where typical images of classes come from: a gallery folder of ``<wnid>_<class name>.jpg`` files.

The gallery is, in order (README, "Galleries"):

1. the folder given (``--gallery DIR`` / ``gallery=``); it must exist, there is no fallback;
2. ``$ATTNGRAD_GALLERY``; it must exist too;
3. ``../shared/data/imagenet-sample`` beside the clone, when attngrad runs from a clone
   (the repository root is found from this file's location, never from a fixed path);
4. the images shipped with the package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from PIL import Image

from .errors import AttngradError
from .io import IMAGE_SUFFIXES, ImageLike, load_image, samples_folder
from .targets import _aliases, class_index

_WNID = re.compile(r"^n\d{8}_(.+)$")


def repository_root() -> Path | None:
    """The clone this package runs from (``<root>/src/attngrad``), or ``None`` when installed."""
    package = Path(__file__).resolve().parent
    root = package.parent.parent
    if package.parent.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def shared_data() -> Path | None:
    """``../shared/data`` beside the clone, when running from a clone that has it; else ``None``."""
    root = repository_root()
    folder = None if root is None else root.parent / "shared" / "data"
    return folder if folder is not None and folder.is_dir() else None


#: The sample images shipped inside the package.
shipped_images = samples_folder


def default_gallery() -> Path:
    """``$ATTNGRAD_GALLERY``, else ``../shared/data/imagenet-sample`` beside the clone, else the shipped images."""
    env = os.environ.get("ATTNGRAD_GALLERY")
    if env:
        if not Path(env).is_dir():
            raise AttngradError(f"ATTNGRAD_GALLERY={env}: no such folder; set it to a folder of <wnid>_<class>.jpg images")
        return Path(env)
    data = shared_data()
    if data is not None and (data / "imagenet-sample").is_dir():
        return data / "imagenet-sample"
    return shipped_images()


def resolve_gallery(gallery: str | os.PathLike | None = None) -> Path:
    """The gallery folder to use: ``gallery`` when given (it must exist), else :func:`default_gallery`."""
    if gallery is None:
        return default_gallery()
    folder = Path(gallery).expanduser()
    if not folder.is_dir():
        raise AttngradError(f"{gallery}: gallery folder not found; pass --gallery DIR with <wnid>_<class name>.jpg files")
    return folder


def gallery_index(gallery: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{class name (lower case): image path}`` for the ``<wnid>_<class name>.<ext>`` files of a gallery."""
    folder = resolve_gallery(gallery)
    table: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _WNID.match(path.stem)
        if match and path.suffix.lower() in IMAGE_SUFFIXES:
            table.setdefault(match.group(1).replace("_", " ").lower(), path)
    if not table:
        raise AttngradError(f"{folder}: no <wnid>_<class name>.jpg images in the gallery folder")
    return table


def class_image(name: int | str, labels: Sequence[str], gallery: str | os.PathLike | None = None) -> Path:
    """A typical image of a class (name or index, resolved through the model's ``labels``) from a gallery."""
    index = class_index(name, labels)
    table = gallery_index(gallery)
    label = labels[index]
    for alias in _aliases([label]):
        if alias in table:
            return table[alias]
    raise AttngradError(
        f"no image of class {label!r} in gallery {resolve_gallery(gallery)}; pass an image path or another --gallery"
    )


def resolve_guide(
    guide: ImageLike, labels: Sequence[str], gallery: str | os.PathLike | None = None
) -> tuple[Image.Image, str]:
    """A guide given as a PIL image, an image path, or a class name -> (RGB image, description)."""
    if isinstance(guide, Image.Image):
        return load_image(guide), "guide image"
    path = guide_path(guide, labels, gallery) if isinstance(guide, str) else Path(guide)
    return load_image(path), str(path)


def is_class_name(guide: str) -> bool:
    """Whether a guide given as text names a class (no such file, no image suffix, no folder) rather than a file."""
    path = Path(guide)
    return not (path.exists() or path.suffix.lower() in IMAGE_SUFFIXES or len(path.parts) > 1)


def guide_path(guide: str, labels: Sequence[str], gallery: str | os.PathLike | None = None) -> Path:
    """The file of a guide given as a path or as a class name (its image in ``gallery``)."""
    return class_image(guide, labels, gallery) if is_class_name(guide) else Path(guide)
