"""``attngrad explain-vlm`` on a tiny random Qwen2-VL saved as a Hugging Face folder (with its processor config)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main

from .conftest import TEMPLATE, tiny_qwen2vl, word_tokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from transformers import Qwen2VLImageProcessor

    root = tmp_path_factory.mktemp("qwen2vl")
    model = tiny_qwen2vl()
    model.config.attngrad_template = TEMPLATE
    model.save_pretrained(root)
    word_tokenizer().save_pretrained(root)
    # min = max pixels = 16 x 16: its own resize keeps a 16 px image as it is
    Qwen2VLImageProcessor(patch_size=2, merge_size=2, temporal_patch_size=2,
                          size={"shortest_edge": 256, "longest_edge": 256}).save_pretrained(root)
    return root


def test_explain_vlm_on_qwen2vl(folder, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["explain-vlm", "el1", "what animal", "--model", str(folder), "-m", "complete,gae",
                                       "-t", "zebra", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert np.load(out / "complete_language.npy").shape == (1, 4, 4)  # 16 px: 8 x 8 patches merged 2 x 2
    assert np.load(out / "gae_vision.npy").shape == (1, 8, 8)
    data = json.loads((out / "scores.json").read_text())
    assert {(r["method"], r["reading"]) for r in data["results"]} == {
        (m, r) for m in ("complete", "gae") for r in ("language", "vision")}


def test_the_folder_loads_as_the_model_it_is(folder):
    from transformers import Qwen2VLImageProcessor

    from attngrad.io import load_image
    from attngrad.vlm import VLMExplainer

    ex = VLMExplainer.from_pretrained(folder)
    assert type(ex.adapter.model).__name__ == "Qwen2VLForConditionalGeneration" and ex.adapter.image_size == 16
    # the preprocessor gives what the model's own processor gives for an image already at the size
    picture = load_image("el1").convert("RGB").resize((16, 16))
    ours = ex.pixels(picture)
    theirs = Qwen2VLImageProcessor.from_pretrained(folder)(images=[picture], return_tensors="pt")["pixel_values"]
    from attngrad.vlm.model import qwen2vl_patches

    flat, _ = qwen2vl_patches(ours, patch=2, merge=2, temporal=2)
    assert torch.allclose(flat, theirs, atol=1e-5)


def test_generation_on_qwen2vl(folder, tmp_path):
    out = tmp_path / "gen"
    result = CliRunner().invoke(main, ["explain-vlm", "el1", "what animal", "--model", str(folder), "-m", "complete",
                                       "-r", "vision", "--generate", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    maps = np.load(out / "complete_vision.npy")
    assert maps.shape[1:] == (8, 8) and np.isfinite(maps).all()
