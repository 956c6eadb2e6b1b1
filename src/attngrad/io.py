"""Loading and validating images with Pillow.

Paths, the bytes of an image file (uploads) and PIL images are accepted. A path that
does not exist but is the short name of an image shipped with the package (``el1``,
``catdog``, ``snail``, ``tusker.jpg``, ``African_elephant`` ...; see :func:`sample_images`)
opens that image, so the README's examples run in an empty folder. Every image
comes back as an 8-bit RGB ``PIL.Image``: grayscale, palette, RGBA
(composited on white), CMYK and 16-bit images are converted; missing, empty,
truncated, non-image or oversized files raise :class:`AttngradError` with a
message that says what to do.
"""

from __future__ import annotations

import io
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import AttngradError

ImageLike = Union[str, os.PathLike, Image.Image]

#: Largest image accepted, in pixels (Pillow's decompression-bomb limit is 2x its warning level).
MAX_PIXELS = 2 * 89_478_485


#: Suffixes of the image files looked for in folders (data sets, galleries, image arguments) and among the
#: shipped samples: one list for every command.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


def samples_folder() -> Path:
    """The folder of the sample images shipped with the package (``attngrad/assets/images``)."""
    return Path(str(resources.files("attngrad").joinpath("assets/images")))


def _short_name(path: Path) -> str:
    """``n01871265_tusker.jpg`` -> ``tusker``; ``el1.jpg`` -> ``el1`` (lower case)."""
    stem = path.stem.lower()
    wnid, _, name = stem.partition("_")
    return name if name and wnid[:1] == "n" and wnid[1:].isdigit() else stem


def sample_images() -> dict[str, Path]:
    """Short name (lower case) -> path of every shipped sample image.

    A file ``n01871265_tusker.jpg`` is found as ``tusker`` and as its stem; ``el1.jpg`` as ``el1``.
    Underscores and spaces are interchangeable (``african_elephant``, ``African elephant``).
    """
    folder = samples_folder()
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES] if folder.is_dir() else []
    table = {_short_name(p): p for p in files}
    for p in files:
        table.setdefault(p.stem.lower(), p)
    return table


def sample_names() -> list[str]:
    """The short names of the shipped samples, as shown in help texts (``catdog, el1, kite, ...``)."""
    folder = samples_folder()
    return [_short_name(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES] if folder.is_dir() else []


def find_sample(name: str | os.PathLike) -> Path | None:
    """The shipped sample image called ``name`` (``el1``, ``snail.jpg``, ``african elephant``), or ``None``.

    Only bare names are looked up (no folder part), so a path such as ``photos/el1.jpg`` is never redirected.
    """
    text = str(name).strip()
    if not text or os.sep in text or (os.altsep and os.altsep in text):
        return None
    stem, suffix = os.path.splitext(text)
    key = (stem if suffix.lower() in IMAGE_SUFFIXES else text).lower().replace(" ", "_")
    return sample_images().get(key)


def resolve_image_path(source: str | os.PathLike) -> Path:
    """``source`` as a path when it exists, else the shipped sample of that short name, else ``source``."""
    path = Path(source)
    if path.exists():
        return path
    return find_sample(source) or path


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without losing the picture."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageLike | bytes, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Open ``source`` (a path, the bytes of an image file, or a PIL image) as an 8-bit RGB image.

    ``name`` is how messages refer to the image (default: the path; ``"image bytes"`` for bytes).

    Raises:
        AttngradError: the file is missing, a directory, empty, not an image,
            truncated, or larger than ``max_pixels``.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        label = name or "image bytes"
        if not source:
            raise AttngradError(f"{label}: the file is empty (0 bytes); re-download or re-export it")
        return _decode(io.BytesIO(source), label, max_pixels)
    path = resolve_image_path(source)
    label = name or str(source)
    if not path.exists():
        raise AttngradError(
            f"{label}: no such file; check the path (shipped samples by short name: {', '.join(sample_names())})"
        )
    if path.is_dir():
        raise AttngradError(f"{label}: is a directory; pass image files (e.g. {path}/*.jpg)")
    if path.stat().st_size == 0:
        raise AttngradError(f"{label}: the file is empty (0 bytes); re-download or re-export it")
    return _decode(path, label, max_pixels)


def _decode(source: Path | io.BytesIO, label: str, max_pixels: int) -> Image.Image:
    """Decode with Pillow, turning every way it can fail into one-line :class:`AttngradError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise AttngradError(
                        f"{label}: {w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,}; "
                        "downscale the image first"
                    )
                img.load()
                return _to_rgb(img)
    except AttngradError:
        raise
    except UnidentifiedImageError:
        raise AttngradError(f"{label}: not an image Pillow can read; pass a JPEG, PNG, BMP, TIFF or WebP file") from None
    except Image.DecompressionBombError as err:
        raise AttngradError(f"{label}: too large to decode safely ({err}); downscale the image first") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise AttngradError(f"{label}: the image is damaged or truncated ({err}); re-download or re-export it") from None
