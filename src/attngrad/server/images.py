"""Images the server holds: decoded uploads (:class:`StoredImage`) and the shipped samples by id.

Clients never name files: an image comes as uploaded bytes, as the id of a shipped
sample (:func:`sample_registry`), or as the content hash of an earlier upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..demo import CASES
from ..explainer import Explainer
from ..io import IMAGE_SUFFIXES, load_image, samples_folder

#: Largest stored copy of an upload for the experiments (2 MP; larger uploads are downscaled).
ORIGINAL_PIXELS = 2_000_000


@dataclass(frozen=True)
class StoredImage:
    """A decoded image: the model input (exact, from the full decode) and the picture for experiments.

    ``original`` is the decoded RGB image, downscaled to at most ``ORIGINAL_PIXELS`` pixels
    (experiments that stitch or rewrite the picture start from it).
    """

    pixels: torch.Tensor
    original: Image.Image

    @property
    def nbytes(self) -> int:
        return self.pixels.numel() * self.pixels.element_size() + 3 * self.original.width * self.original.height


def decode(explainer: Explainer, data: bytes, name: str, *, max_pixels: int) -> StoredImage:
    """Validate and preprocess image bytes with :func:`attngrad.io.load_image` (no client path involved);
    :class:`~attngrad.errors.AttngradError` for anything that is not a safe, whole image."""
    image = load_image(data, max_pixels=max_pixels, name=f"upload {name!r}")
    pixels, _ = explainer.prepare(image)
    if image.width * image.height > ORIGINAL_PIXELS:
        scale = (ORIGINAL_PIXELS / (image.width * image.height)) ** 0.5
        image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
    return StoredImage(pixels.detach().cpu(), image)


def sample_registry() -> dict[str, dict[str, Any]]:
    """The shipped images by id (file stem) -> path and a readable title; the only files served."""
    folder = samples_folder()
    samples = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        title = " + ".join(CASES[path.name]) if path.name in CASES else path.stem.split("_", 1)[-1].replace("_", " ")
        samples[path.stem] = {"path": path, "title": title}
    return samples
