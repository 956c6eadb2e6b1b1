"""The results folder: bad options write nothing, resume checks image content and damaged shards,
finished runs resume and summarise from per_image.npz alone, and no absolute path is stored."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.mark.parametrize("content, words", [("[1, 2]", "is not a settings object"), ("{", "cannot be read")])
def test_resume_refuses_a_damaged_run_file_in_one_line(tiny_explainer, image_dir, tmp_path, content, words):
    """The perturbation test's folder goes through the same settings checks as every resumable run."""
    assert _run(tiny_explainer, image_dir, tmp_path / "out", max_batches=1) is None
    (tmp_path / "out" / "run.json").write_text(content)
    with pytest.raises(AttngradError, match=words):
        _run(tiny_explainer, image_dir, tmp_path / "out", resume=True)
    with pytest.raises(AttngradError, match="already holds a run"):
        _run(tiny_explainer, image_dir, tmp_path / "out")


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


def test_a_run_reads_each_shard_once(tiny_explainer, image_dir, tmp_path, monkeypatch):
    """The completeness check after a run trusts the shards' names; only the summary reads them."""
    from attngrad.evaluation import storage

    reads: list[str] = []
    read_npz = storage.read_npz

    def counting(path):
        reads.append(path.name)
        return read_npz(path)

    monkeypatch.setattr(storage, "read_npz", counting)
    summary = _run(tiny_explainer, image_dir, tmp_path / "out", max_batches=4)  # 4 batches of 2: all of them
    assert summary is not None and summary["complete"]
    assert sorted(reads) == [f"batch-{j:06d}.npz" for j in range(4)]


def test_a_failed_rewrite_of_per_image_npz_keeps_the_old_file(tiny_explainer, image_dir, tmp_path, monkeypatch):
    """``_drop_from_per_image`` (a resume with a larger --limit) writes a new file and renames it."""
    from attngrad.evaluation import storage

    out = tmp_path / "out"
    _run(tiny_explainer, image_dir, out, limit=5)
    before = (out / "per_image.npz").read_bytes()

    def disk_full(file, **arrays):
        f = open(file, "wb") if isinstance(file, (str, type(out))) else file
        f.write(b"half a file")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="no space"):
        storage._drop_from_per_image(out, 4)
    assert (out / "per_image.npz").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no partial file left
    monkeypatch.undo()
    storage._drop_from_per_image(out, 4)
    assert sorted(load_results(out)["index"].tolist()) == [0, 1, 2, 3, 4]  # batch 2's shard still holds image 4
    assert np.load(out / "per_image.npz")["index"].tolist() == [0, 1, 2, 3]


_COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.mark.parametrize("name", ["perturbation-zebra-paper", "insertion-deletion"])
@pytest.mark.parametrize("layout", ["per_image", "shards"])
def test_a_committed_results_folder_summarises_identically(tmp_path, name, layout):
    """Folders written by earlier code (committed under docs/results, read only here) summarise to the
    same results.json / .csv / .md and per_image.npz; as shards written by ``np.savez`` as well."""
    import shutil

    source = _COMMITTED / name
    if not (source / "per_image.npz").is_file():
        pytest.skip(f"{source} is not in this checkout")
    out = tmp_path / name
    shutil.copytree(source, out)
    stored = dict(np.load(source / "per_image.npz"))
    if layout == "shards":  # the raw results as the runs wrote them, batch by batch, and no per_image.npz
        (out / "per_image.npz").unlink()
        (out / "shards").mkdir()
        size = json.loads((out / "run.json").read_text())["batch_size"]
        order = np.argsort(stored["index"])
        for j, start in enumerate(range(0, len(order), size)):
            rows = order[start : start + size]
            arrays = {k: v[rows] for k, v in stored.items() if not k.startswith("failed_")}
            arrays.update(failed_index=np.zeros(0, np.int64), failed_message=np.zeros(0, str))
            np.savez(out / "shards" / f"batch-{j:06d}.npz", **arrays)
    summary = summarize(out)
    expected = json.loads((source / "results.json").read_text())
    assert {k: v for k, v in summary.items() if k != "versions"} == {k: v for k, v in expected.items() if k != "versions"}
    for text in ("results.csv", "results.md"):
        assert (out / text).read_bytes() == (source / text).read_bytes(), text
    again = dict(np.load(out / "per_image.npz"))
    assert again.keys() == stored.keys() and all(np.array_equal(again[k], stored[k]) for k in stored)


def test_an_edited_shard_is_named_and_recomputed_on_resume(tiny_explainer, image_dir, tmp_path, capfd):
    """A readable shard whose numbers were changed no longer matches the digest written with it."""
    full = _full_and_cut(tiny_explainer, image_dir, tmp_path)
    shard = tmp_path / "cut" / "shards" / "batch-000001.npz"
    with np.load(shard) as f:
        arrays = {k: f[k] for k in f.files}
    key = next(k for k in arrays if k.endswith(".prob"))
    arrays[key] = arrays[key] + 0.5  # a tampered probability, the old digest kept
    np.savez(shard, **arrays)
    with pytest.raises(AttngradError, match="does not match its digest"):
        summarize(tmp_path / "cut")
    capfd.readouterr()
    resumed = _run(tiny_explainer, image_dir, tmp_path / "cut", resume=True)
    assert "batch-000001.npz: its content does not match its digest" in capfd.readouterr().err
    assert resumed["methods"] == full["methods"]
