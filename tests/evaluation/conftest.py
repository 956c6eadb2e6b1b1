"""Fixtures: a tiny random ViT saved as a Hugging Face folder, and a small labelled image folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

NUM_LABELS = 5


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=NUM_LABELS,
        # Large random weights: the top-1 changes as pixels are removed (with the default 0.02 it is
        # class 0 for every perturbed image, and a swapped direction or a wrong fill would pass).
        initializer_range=0.3,
    )  # fmt: skip
    model = ViTForImageClassification(config).eval()
    folder = tmp_path_factory.mktemp("tiny-vit")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2,
                "do_rescale": True, "rescale_factor": 1 / 255,
                "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            }
        )  # fmt: skip
    )
    return folder


@pytest.fixture(scope="session")
def tiny_explainer(tiny_model_dir):
    from attngrad import Explainer

    return Explainer.from_pretrained(tiny_model_dir)


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` random 40x36 images named ``n0000000K_LABEL_C.png`` (class C = K mod 5)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"n{k:08d}_LABEL_{k % NUM_LABELS}.png"
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(name="write_images")
def write_images_fixture():
    return write_images


@pytest.fixture
def image_dir(tmp_path) -> Path:
    write_images(tmp_path / "data", 8)
    return tmp_path / "data"
