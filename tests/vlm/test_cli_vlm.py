"""``attngrad explain-vlm`` on a tiny random LLaVA saved as a Hugging Face folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from attngrad.cli import main

from .conftest import save_tiny_llava


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("llava"))


def test_explain_vlm_writes_maps_and_scores(folder, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["explain-vlm", "el1", "what animal", "--model", str(folder), "-m", "complete,gae",
                                       "-t", "zebra", "-c", "horse", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rather than 'horse'" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["complete_language.npy", "complete_vision.npy", "explanation.html", "explanation.png",
                     "gae_language.npy", "gae_vision.npy", "scores.json"]
    assert np.load(out / "complete_vision.npy").shape == (1, 4, 4)
    data = json.loads((out / "scores.json").read_text())
    assert {r["reading"] for r in data["results"]} == {"language", "vision"}
    assert all(r["target"] == "zebra" for r in data["results"])
    # the prompt tokens' scores do not depend on the reading, so each method's top tokens are printed once
    tokens = {(r["method"], r["reading"]): r["tokens"] for r in data["results"]}
    assert all(tokens[(m, "language")] == tokens[(m, "vision")] for m in ("complete", "gae"))
    assert [line.split(":")[0].strip() for line in result.output.splitlines() if "top prompt tokens" in line] == [
        "complete", "gae"]
    assert f"wrote {out}/: explanation.png, explanation.html, 4 .npy maps and scores.json" in result.output


def test_explain_vlm_generation(folder, tmp_path):
    out = tmp_path / "gen"
    result = CliRunner().invoke(main, ["explain-vlm", "el1", "what animal", "--model", str(folder), "-m", "complete",
                                       "-r", "vision", "--generate", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    maps = np.load(out / "complete_vision.npy")
    assert maps.shape[1:] == (4, 4) and 1 <= maps.shape[0] <= 3 and np.isfinite(maps).all()
    answer = json.loads((out / "scores.json").read_text())["results"]
    assert len(answer) == maps.shape[0]
    line = next(x for x in result.output.splitlines() if x.startswith("[complete, vision] answer: "))
    assert line.split("answer: ")[1].startswith(" + ".join(repr(r["target"]) for r in answer))
    assert ("it stopped at the end token)" in line) == (len(answer) < 3)
    page = (out / "explanation.html").read_text()
    assert page.count("(complete, vision): <span class='text'>") == len(answer)


def test_contrast_equal_to_target_is_one_line(folder, tmp_path):
    result = CliRunner().invoke(main, ["explain-vlm", "el1", "what animal", "--model", str(folder), "-t", "zebra",
                                       "-c", "zebra", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and result.stderr.strip().startswith("attngrad: error: the contrast equals the target")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("option", ["-t", "-c"])
def test_a_word_outside_the_vocabulary_is_refused_not_explained_as_unknown(folder, tmp_path, option):
    """The tiny model's word tokenizer maps 'zzqq' to <unk>: explaining <unk> would be a silent wrong answer."""
    extra = ["-t", "zebra", "-c", "zzqq", "--loss", "diff"] if option == "-c" else ["-t", "zzqq"]
    result = CliRunner().invoke(main, ["explain-vlm", "el1", "what animal", "--model", str(folder), *extra,
                                       "--out", str(tmp_path / "x")])
    what = "contrast" if option == "-c" else "target"
    assert result.exit_code == 2 and result.stderr.strip().startswith(
        f"attngrad: error: {what} 'zzqq' is not in this model's vocabulary"), result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_a_multi_token_target_warns_and_explains_its_first_token(folder, tmp_path):
    runs = {}
    for name, target in (("two", "zebra horse"), ("one", "zebra")):
        result = CliRunner().invoke(main, ["explain-vlm", "el1", "what animal", "--model", str(folder), "-m", "complete",
                                           "-r", "vision", "-t", target, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        runs[name] = result
    warned = [line for line in runs["two"].stderr.splitlines() if line.startswith("attngrad: warning:")]
    assert len(warned) == 1 and "is 2 tokens" in warned[0] and "first token 'zebra'" in warned[0], runs["two"].stderr
    assert "warning" not in runs["one"].stderr
    assert np.array_equal(np.load(tmp_path / "two" / "complete_vision.npy"), np.load(tmp_path / "one" / "complete_vision.npy"))
