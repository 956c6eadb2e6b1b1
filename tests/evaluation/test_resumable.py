"""The shared resumable-run loop: refusals name what differs, finished batches are skipped by the callers,
and a run that fails before its first batch leaves nothing that preparing it created."""

from __future__ import annotations

import json

import pytest

from attngrad.errors import AttngradError
from attngrad.evaluation.resumable import check_settings, compute_batches, new_paths, prepare_on_rank0


def _prepared(tmp_path):
    out = tmp_path / "run"
    created = new_paths(out, out / "shards", out / "settings.json")
    (out / "shards").mkdir(parents=True)
    (out / "settings.json").write_text("{}")
    return out, created


def test_a_failure_before_the_first_batch_removes_what_was_created(tmp_path):
    (tmp_path / "kept.txt").write_text("mine")
    out, created = _prepared(tmp_path)

    def fail(j, _):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        compute_batches([0, 1], fail, created=created, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_a_failure_after_a_batch_keeps_the_run(tmp_path):
    out, created = _prepared(tmp_path)
    seen = []

    def second_fails(j, item):
        if j == 2:
            raise RuntimeError("boom")
        seen.append((j, item))
        (out / "shards" / f"{j}.json").write_text("[]")

    with pytest.raises(RuntimeError):
        compute_batches([1, 2], second_fails, inputs=iter("ab"), created=created, progress=False)
    assert seen == [(1, "a")] and (out / "settings.json").exists() and (out / "shards" / "1.json").exists()


def test_only_the_given_batches_run_with_their_weights(tmp_path):
    done = []
    n = compute_batches([3, 5], lambda j, _: done.append(j), weight=lambda j: 10, total=60, progress=False)
    assert n == 2 and done == [3, 5]


def test_check_settings(tmp_path):
    path = tmp_path / "run" / "settings.json"
    assert check_settings(path, {"a": 1}, resume=False) is False
    with pytest.raises(AttngradError, match="nothing to resume"):
        check_settings(path, {"a": 1}, resume=True)
    assert check_settings(path, {"a": 1}, resume=True, start_on_resume=True) is False
    path.parent.mkdir()
    path.write_text(json.dumps({"a": 1, "b": [1, 2]}))
    with pytest.raises(AttngradError, match="already holds a run"):
        check_settings(path, {"a": 1, "b": (1, 2)}, resume=False)
    assert check_settings(path, {"a": 1, "b": (1, 2)}, resume=True) is True  # tuples as stored
    with pytest.raises(AttngradError, match=r"other settings \(a, c\)"):
        check_settings(path, {"a": 2, "b": [1, 2], "c": 0}, resume=True)
    path.write_text("{not json")
    with pytest.raises(AttngradError, match="cannot be read"):
        check_settings(path, {"a": 1}, resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(AttngradError, match="is a file"):
        check_settings(tmp_path / "file" / "settings.json", {}, resume=False)


def test_prepare_on_rank0_turns_any_failure_into_one_line(tmp_path):
    assert prepare_on_rank0(tmp_path, lambda: [tmp_path]) == [tmp_path]

    def broken():
        raise OSError("disk full")

    with pytest.raises(AttngradError, match="cannot prepare .*disk full"):
        prepare_on_rank0(tmp_path, broken)
