"""The results folder: bad options write nothing, resume checks image content and damaged shards,
finished runs resume and summarise from per_image.npz alone, and no absolute path is stored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.evaluation import RunSettings, discover, load_results, run_perturbation, summarize


def _run(explainer, data, out, limit=None, **kwargs):
    options = dict(batch_size=2, eval_batch_size=8, workers=0, progress=False)
    options.update(kwargs)
    return run_perturbation(explainer, discover(data, explainer.labels, limit=limit), out, RunSettings(["gae"], **options))


def _cli(model, data, out, *extra):
    args = ["evaluate", "perturbation", "--data", str(data), "--model", str(model), "--workers", "0",
            "--methods", "gae", "--out", str(out), *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def _one_line_error(res, words):
    assert res.exit_code == 2, res.output
    text = res.stderr.strip()
    assert "Traceback" not in text and text.count("attngrad: error:") == 1, text
    assert words in text, text


@pytest.mark.parametrize(
    "option, value, words",
    [("--limit", "0", "--limit must be a positive"), ("--limit", "-3", "--limit must be a positive"),
     ("--every", "0", "--every must be a positive"), ("--batch-size", "0", "--batch-size must be a positive"),
     ("--batch-size", "-1", "--batch-size must be a positive"),
     ("--eval-batch-size", "0", "--eval-batch-size must be a positive"), ("--workers", "-1", "--workers must be")],
)  # fmt: skip
def test_bad_numbers_are_one_line_errors_and_write_nothing(tiny_model_dir, image_dir, tmp_path, option, value, words):
    res = _cli(tiny_model_dir, image_dir, tmp_path / "out", option, value)
    _one_line_error(res, words)
    assert not (tmp_path / "out").exists()  # no run.json to block a corrected rerun, no empty folder


def test_a_run_that_fails_before_its_first_result_leaves_nothing(tiny_explainer, image_dir, tmp_path, monkeypatch):
    from attngrad.evaluation import runner

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "evaluate_batch", broken)
    with pytest.raises(RuntimeError):
        _run(tiny_explainer, image_dir, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    with pytest.raises(RuntimeError):
        _run(tiny_explainer, image_dir, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]  # only what was there
    with pytest.raises(AttngradError, match="is a file"):
        _run(tiny_explainer, image_dir, tmp_path / "mine" / "notes.txt")


def test_resume_refuses_an_image_replaced_under_the_same_name(tiny_explainer, image_dir, tmp_path):
    assert _run(tiny_explainer, image_dir, tmp_path / "out", max_batches=1) is None
    rows = (tmp_path / "out" / "images.tsv").read_text().splitlines()
    assert rows[0] == "path\tlabel\tsize\tblake2b" and len(rows) == 9
    assert rows[1].split("\t")[:2] == ["n00000000_LABEL_0.png", "0"]
    victim = image_dir / "n00000005_LABEL_0.png"
    victim.write_bytes((image_dir / "n00000006_LABEL_1.png").read_bytes())  # new content, same name and size
    with pytest.raises(AttngradError, match=r"1 replaced \(other content under the same name\): n00000005_LABEL_0.png"):
        _run(tiny_explainer, image_dir, tmp_path / "out", resume=True)


def _full_and_cut(explainer, data, tmp_path):
    full = _run(explainer, data, tmp_path / "full")
    assert _run(explainer, data, tmp_path / "cut", max_batches=3) is None
    return full


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_shard_is_named_and_recomputed_on_resume(tiny_explainer, image_dir, tmp_path, capfd, damage):
    full = _full_and_cut(tiny_explainer, image_dir, tmp_path)
    shard = tmp_path / "cut" / "shards" / "batch-000001.npz"
    data = shard.read_bytes()
    shard.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"x" * 100, "empty": b""}[damage])
    with pytest.raises(AttngradError, match="batch-000001.npz is unreadable.*--resume"):
        summarize(tmp_path / "cut")
    capfd.readouterr()
    resumed = _run(tiny_explainer, image_dir, tmp_path / "cut", resume=True)
    assert "batch-000001.npz is unreadable" in capfd.readouterr().err
    assert resumed["methods"] == full["methods"]
    a, b = load_results(tmp_path / "full"), load_results(tmp_path / "cut")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_per_image_npz_stands_in_for_the_shards(tiny_explainer, image_dir, tmp_path):
    import shutil

    full = _run(tiny_explainer, image_dir, tmp_path / "full")
    _run(tiny_explainer, image_dir, tmp_path / "grown", limit=5)  # last batch half full
    for folder in ("full", "grown"):
        shutil.rmtree(tmp_path / folder / "shards")
    again = summarize(tmp_path / "full")  # summaries without shards
    assert again["methods"] == full["methods"] and again["complete"]
    assert _run(tiny_explainer, image_dir, tmp_path / "full", resume=True)["methods"] == full["methods"]  # nothing to do
    assert not list((tmp_path / "full" / "shards").glob("*.npz"))
    grown = _run(tiny_explainer, image_dir, tmp_path / "grown", limit=8, resume=True)  # larger limit from per_image.npz
    assert grown["methods"] == full["methods"] and grown["images"] == 8
    assert sorted(p.name for p in (tmp_path / "grown" / "shards").iterdir()) == ["batch-000002.npz", "batch-000003.npz"]
    a, b = load_results(tmp_path / "full"), load_results(tmp_path / "grown")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_no_absolute_path_is_stored(tiny_model_dir, image_dir, tmp_path):
    guide = tmp_path / "n00000099_LABEL_2.png"
    guide.write_bytes((image_dir / "n00000003_LABEL_3.png").read_bytes())
    (image_dir / "n00000100_LABEL_1.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "results" / "run"
    res = _cli(tiny_model_dir, image_dir.resolve(), out.resolve(), "--guide", str(guide.resolve()), "--batch-size", "3")
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["data"] == "../../data" and run["guide"] == "../../n00000099_LABEL_2.png"
    assert run["skipped_guide_class"] == ["n00000002_LABEL_2.png", "n00000007_LABEL_2.png"]
    texts = [(out / name).read_text() for name in ("run.json", "images.tsv", "results.json", "results.csv", "results.md")]
    raw = load_results(out)
    texts += [str(raw["path"].tolist()), str(raw["failed_message"].tolist())]
    assert "n00000100_LABEL_1.jpg" in texts[-1]
    for text in texts:
        assert str(tmp_path) not in text and "/tmp" not in text
