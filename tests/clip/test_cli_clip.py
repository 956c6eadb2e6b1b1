"""``attngrad explain-clip`` on a tiny random CLIP folder (and on the stand-in when it is installed)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from attngrad.cli import main


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, tiny_clip, tokenizer):
    folder = tmp_path_factory.mktemp("tiny-clip")
    copy.deepcopy(tiny_clip).float().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "pic.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_explain_clip_writes_maps_per_text_and_method(clip_folder, image_file, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "explain-clip", str(image_file), "--text", "a zebra", "--text", "an elephant", "--model", str(clip_folder),
        "--method", "complete,gradeclip,attn_gradcam", "--out", str(out), "--no-color",
    ])
    assert result.exit_code == 0, result.output
    folder = out / "pic"
    for method in ("complete", "gradeclip", "attn_gradcam"):
        for text in ("a_zebra", "an_elephant"):
            assert (folder / f"{method}_{text}.png").exists()
            assert np.load(folder / f"{method}_{text}.npy").shape == (4, 4)
    assert (folder / "all.png").exists()
    scores = json.loads((folder / "text_scores.json").read_text())
    assert {r["method"] for r in scores["results"]} == {"complete", "gradeclip"}  # attn_gradcam: image tower only
    assert "'a zebra': cos = " in result.output and "zero-shot p = " in result.output
    assert "[text tower, complete] a[" in result.output


def test_explain_clip_errors_are_one_line_and_write_nothing(clip_folder, image_file, tmp_path):
    out = tmp_path / "out"
    for args in (["--method", "tattr"], ["--model", str(tmp_path / "missing")], ["--text", "a zebra!"]):
        result = CliRunner().invoke(main, ["explain-clip", str(image_file), "--text", "a zebra", "--out", str(out),
                                           "--model", str(clip_folder), *args])
        assert result.exit_code == 2, result.output
        assert result.output.strip().count("\n") == 0 and result.output.startswith("attngrad: error:")
        assert not out.exists()
