"""Image preprocessing read from a model's own configuration, without torchvision.

Hugging Face models describe it in ``preprocessor_config.json`` (size, resample,
centre crop, rescale factor, mean, std); timm models in ``pretrained_cfg``
(input size, interpolation, crop_pct, mean, std). Both become a
:class:`Preprocessor`, which resizes with Pillow exactly as those libraries do.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import AttngradError

_TIMM_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

#: OpenAI CLIP's mean and std: Qwen2-VL's image processor's defaults
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pixel_counts(cfg: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(fewest, most)`` pixels of a processor config in pixel counts (Qwen2-VL's), ``None`` for one in sides.
    A bound the config does not state is left open (a model saved without its processor states none)."""
    given = cfg.get("size")
    size: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    counted = "min_pixels" in cfg or "max_pixels" in cfg or str(cfg.get("image_processor_type", "")).startswith("Qwen2VL")
    if not counted:
        return None
    low = cfg.get("min_pixels") or size.get("shortest_edge")  # a null min_pixels falls back to the size
    high = cfg.get("max_pixels") or size.get("longest_edge")
    return int(low or 1), int(high or sys.maxsize)


@dataclass(frozen=True)
class Preprocessor:
    """Resize (to a fixed size or by the shortest edge), centre-crop, rescale, normalise.

    Attributes:
        resize: ``(height, width)`` to resize to, or ``None``.
        shortest_edge: resize so the short side has this length (aspect kept), or ``None``.
        crop: ``(height, width)`` of the centre crop, or ``None``.
        resample: a Pillow resampling filter.
        rescale: factor from 0..255 to the model's range (usually 1/255).
        mean, std: per-channel normalisation, or ``None`` to skip it.
        crop_rounding: "floor" (Hugging Face) or "round" (torchvision/timm) for the crop offset.
    """

    resize: tuple[int, int] | None = (224, 224)
    shortest_edge: int | None = None
    crop: tuple[int, int] | None = None
    resample: int = Image.Resampling.BICUBIC
    rescale: float = 1 / 255
    mean: tuple[float, ...] | None = (0.5, 0.5, 0.5)
    std: tuple[float, ...] | None = (0.5, 0.5, 0.5)
    crop_rounding: str = "floor"

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], *, image_size: int | None = None) -> "Preprocessor":
        """Build from a Hugging Face ``preprocessor_config.json`` dictionary.

        Qwen2-VL's processor states pixel counts, not sides (``min_pixels`` / ``max_pixels``, or ``size`` as
        ``shortest_edge`` / ``longest_edge``: the fewest and most pixels of a resized image); it resizes any
        image to a multiple of its patch size inside that range. attngrad explains such a model at one square
        ``image_size`` (required then): the image is resized to ``image_size`` x ``image_size`` when that many
        pixels lie in the range, else :class:`AttngradError`. ``image_size`` is not used for a config of sides.
        """
        counts = _pixel_counts(cfg)
        if counts is not None:
            return cls._from_pixel_counts(cfg, counts, image_size)
        size = cfg.get("size") or {}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        resize, shortest = None, None
        if cfg.get("do_resize", True):
            if "height" in size:
                resize = (int(size["height"]), int(size["width"]))
            elif "shortest_edge" in size:
                shortest = int(size["shortest_edge"])
        crop = None
        if cfg.get("do_center_crop"):
            cs = cfg.get("crop_size") or {}
            if isinstance(cs, int):
                cs = {"height": cs, "width": cs}
            crop = (int(cs["height"]), int(cs["width"]))
        return cls(
            resize=resize,
            shortest_edge=shortest,
            crop=crop,
            resample=int(cfg.get("resample", Image.Resampling.BILINEAR)),
            rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
            mean=tuple(cfg.get("image_mean", (0.5, 0.5, 0.5))) if cfg.get("do_normalize", True) else None,
            std=tuple(cfg.get("image_std", (0.5, 0.5, 0.5))) if cfg.get("do_normalize", True) else None,
        )

    @classmethod
    def _from_pixel_counts(cls, cfg: Mapping[str, Any], counts: tuple[int, int], image_size: int | None) -> "Preprocessor":
        """A processor config in pixel counts (Qwen2-VL's) read for one square ``image_size`` (see :meth:`from_hf`)."""
        low, high = counts
        if image_size is None:
            raise AttngradError(f"this image processor ({cfg.get('image_processor_type', 'Qwen2-VL')}) gives pixel "
                                f"counts ({low} to {high} pixels per image), not a side; give the image size explained")
        if not low <= image_size * image_size <= high:
            raise AttngradError(f"the image size {image_size} x {image_size} px ({image_size * image_size} pixels) is "
                                f"outside the {low} to {high} pixels its image processor resizes to; set the "
                                "config's attngrad_image_size inside that range")
        normalize = cfg.get("do_normalize", True)
        return cls(
            resize=(image_size, image_size),
            resample=int(cfg.get("resample", Image.Resampling.BICUBIC)),  # Qwen2VLImageProcessor's defaults
            rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
            mean=tuple(cfg.get("image_mean", _CLIP_MEAN)) if normalize else None,
            std=tuple(cfg.get("image_std", _CLIP_STD)) if normalize else None,
        )

    @classmethod
    def from_timm(cls, cfg: Mapping[str, Any]) -> "Preprocessor":
        """Build from a timm ``pretrained_cfg`` (timm's eval transform: resize by crop_pct, centre crop)."""
        _, h, w = cfg.get("input_size", (3, 224, 224))
        crop_pct = float(cfg.get("crop_pct", 0.875) or 1.0)
        mode = cfg.get("crop_mode", "center")
        resample = _TIMM_INTERPOLATION.get(cfg.get("interpolation", "bicubic"), Image.Resampling.BICUBIC)
        if mode == "squash":
            resize, shortest = (math.floor(h / crop_pct), math.floor(w / crop_pct)), None
        else:
            resize, shortest = None, math.floor(min(h, w) / crop_pct)
        return cls(
            resize=resize,
            shortest_edge=shortest,
            crop=(h, w),
            resample=resample,
            rescale=1 / 255,
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            crop_rounding="round",
        )

    def geometry(self, img: Image.Image) -> Image.Image:
        """Resize and crop an RGB image to what the model sees (no value change)."""
        if self.resize is not None:
            img = img.resize((self.resize[1], self.resize[0]), resample=self.resample, reducing_gap=None)
        elif self.shortest_edge is not None:
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(self.shortest_edge * long / short)
            size = (self.shortest_edge, new_long) if w <= h else (new_long, self.shortest_edge)
            img = img.resize(size, resample=self.resample, reducing_gap=None)
        if self.crop is not None:
            ch, cw = self.crop
            w, h = img.size
            if self.crop_rounding == "round":
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            else:
                top, left = (h - ch) // 2, (w - cw) // 2
            img = img.crop((left, top, left + cw, top + ch))
        return img

    def normalize(self, pixels01: torch.Tensor) -> torch.Tensor:
        """Map a (B, 3, H, W) tensor of values already rescaled (e.g. [0, 1]) to model input."""
        if self.mean is None:
            return pixels01
        mean = torch.tensor(self.mean, dtype=pixels01.dtype, device=pixels01.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=pixels01.dtype, device=pixels01.device).view(1, -1, 1, 1)
        return (pixels01 - mean) / std

    def denormalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        if self.mean is None:
            return pixel_values
        mean = torch.tensor(self.mean, dtype=pixel_values.dtype, device=pixel_values.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=pixel_values.dtype, device=pixel_values.device).view(1, -1, 1, 1)
        return pixel_values * std + mean

    def to_unit(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Geometry + rescale: a (B, 3, H, W) float tensor in the rescaled range (usually [0, 1])."""
        arrays = [np.asarray(self.geometry(im), dtype=np.float32) for im in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            sizes = ", ".join(f"{w}x{h}" for h, w, _ in sorted(shapes))
            raise AttngradError(
                f"the preprocessed images differ in size ({sizes}): this model's preprocessing keeps the aspect "
                "ratio without a crop; explain images of one shape per batch, or give a Preprocessor with a fixed "
                "resize or crop"
            )
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return batch * self.rescale

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Full preprocessing: a (B, 3, H, W) float tensor ready for the model."""
        return self.normalize(self.to_unit(images))
