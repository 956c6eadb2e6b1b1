"""Shared fixtures: tiny random models built from a config, the shipped ViT-Ti, the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "data" / "imagenet-sample"
MULTICLASS = SHARED / "data" / "multiclass"
TIMM_CKPT = SHARED / "models" / "vit-tiny-patch16-224-timm" / "vit_tiny_patch16_224.safetensors"

needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared (real data and weights) is not beside the repo")


def tiny_vit_config(**overrides):
    from transformers import ViTConfig

    cfg = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
        layer_norm_eps=1e-6,
        id2label={i: name for i, name in enumerate(["cat", "dog", "zebra", "African elephant", "tench, Tinca tinca"])},
    )
    cfg.update(overrides)
    return ViTConfig(**cfg)


@pytest.fixture(scope="session")
def tiny_vit():
    """A random 3-layer, 2-head ViT on 32x32 inputs (4x4 patches + CLS = 17 tokens)."""
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(tiny_vit_config()).eval()


@pytest.fixture(scope="session")
def tiny_explainer(tiny_vit):
    from attngrad import Explainer
    from attngrad.models import Preprocessor

    ex = Explainer(tiny_vit)
    ex.adapter.preprocessor = Preprocessor(resize=(32, 32))
    return ex


@pytest.fixture(scope="session")
def tiny_pixels():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


@pytest.fixture(scope="session")
def vit_ti():
    """The ViT-Ti shipped in the package (real ImageNet weights)."""
    from attngrad import Explainer

    return Explainer.from_pretrained()
