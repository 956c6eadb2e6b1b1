"""Preprocessing from the model's own config equals transformers' PIL image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

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
