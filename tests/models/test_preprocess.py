"""Preprocessing from the model's own config equals transformers' PIL image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attngrad.errors import AttngradError
from attngrad.models import DEFAULT_MODEL, Preprocessor


def _image(w=300, h=200):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_shipped_config_matches_transformers_processor():
    import json

    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    cfg = json.loads((DEFAULT_MODEL / "preprocessor_config.json").read_text())
    ours = Preprocessor.from_hf(cfg)([_image()])
    theirs = ViTImageProcessorPil(**{k: v for k, v in cfg.items() if k != "image_processor_type"})(
        _image(), return_tensors="pt"
    )["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_shortest_edge_and_center_crop():
    pre = Preprocessor(resize=None, shortest_edge=64, crop=(56, 56), mean=None, std=None)
    img = pre.geometry(_image(300, 200))
    assert img.size == (56, 56)
    assert pre([_image(300, 200)]).max() <= 1.0


def test_timm_eval_transform_geometry():
    pre = Preprocessor.from_timm({"input_size": (3, 224, 224), "crop_pct": 0.9, "interpolation": "bicubic",
                                  "mean": (0.5,) * 3, "std": (0.5,) * 3})
    assert pre.shortest_edge == 248 and pre.crop == (224, 224)
    assert pre([_image(400, 300)]).shape == (1, 3, 224, 224)


@pytest.mark.parametrize("mean", [(0.5, 0.5, 0.5), (0.485, 0.456, 0.406)])
def test_normalize_round_trip(mean):
    pre = Preprocessor(mean=mean, std=(0.2, 0.3, 0.4))
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(pre.denormalize(pre.normalize(x)), x)


def test_images_that_preprocess_to_different_sizes_are_a_clear_error():
    from PIL import Image

    from attngrad import AttngradError
    from attngrad.models import Preprocessor

    pre = Preprocessor(resize=None, shortest_edge=32)  # aspect kept, no crop
    with pytest.raises(AttngradError, match="differ in size .*explain images of one shape"):
        pre([Image.new("RGB", (40, 40)), Image.new("RGB", (80, 40))])


# Qwen2-VL's processor config as the released checkpoints store it (pixel counts), and as transformers 5 saves it
_QWEN_RELEASED = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                  "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                  "image_std": [0.26862954, 0.26130258, 0.27577711], "image_processor_type": "Qwen2VLImageProcessor"}
_QWEN_SAVED = {"image_processor_type": "Qwen2VLImageProcessor", "size": {"shortest_edge": 3136, "longest_edge": 12845056},
               "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "resample": 3}


@pytest.mark.parametrize("cfg", [_QWEN_RELEASED, _QWEN_SAVED], ids=["min_max_pixels", "size_in_pixels"])
def test_qwen2vl_pixel_counts_are_not_a_side(cfg):
    """``shortest_edge`` 3136 is a pixel count (56 x 56), not a side of 3136 px: the image goes to the one square size."""
    pre = Preprocessor.from_hf(cfg, image_size=448)
    assert pre.resize == (448, 448) and pre.shortest_edge is None and pre.crop is None
    assert pre.resample == Image.Resampling.BICUBIC and pre.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert pre.geometry(_image(300, 200)).size == (448, 448)
    with pytest.raises(AttngradError, match="pixel counts"):
        Preprocessor.from_hf(cfg)  # no image size: refused, not read as a side
    with pytest.raises(AttngradError, match="outside the 3136 to 12845056 pixels"):
        Preprocessor.from_hf(cfg, image_size=28)


def test_a_null_pixel_bound_falls_back_to_the_size():
    cfg = {**_QWEN_SAVED, "min_pixels": None, "max_pixels": None}
    with pytest.raises(AttngradError, match="outside the 3136 to 12845056 pixels"):
        Preprocessor.from_hf(cfg, image_size=28)


def test_qwen2vl_preprocessing_equals_its_processor_at_a_size_it_keeps():
    """For an image already at a size Qwen2VLImageProcessor keeps (a multiple of 28 px in range), its flattened
    patches equal ours laid out the same way."""
    from transformers import Qwen2VLImageProcessor

    from attngrad.vlm.model import qwen2vl_patches

    image = _image(56, 56)
    ours = Preprocessor.from_hf(_QWEN_RELEASED, image_size=56)([image])
    theirs = Qwen2VLImageProcessor(**{k: v for k, v in _QWEN_RELEASED.items() if k != "image_processor_type"})(
        images=[image], return_tensors="pt")
    flat, grid = qwen2vl_patches(ours, patch=14, merge=2, temporal=2)
    assert theirs["image_grid_thw"].tolist() == grid.tolist() == [[1, 4, 4]]
    torch.testing.assert_close(flat, theirs["pixel_values"], atol=1e-5, rtol=0)
