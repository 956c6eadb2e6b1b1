"""Real interruptions and real processes: a killed run resumed, and torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.evaluation import load_shards

pytestmark = pytest.mark.slow


def _args(data, model, out, *extra):
    return ["perturbation", "--data", str(data), "--model", str(model), "--workers", "0",
            "--methods", "gae,complete,random", "--out", str(out), *extra]  # fmt: skip


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _same(a, b):
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    assert ra["methods"] == rb["methods"] and ra["images"] == rb["images"]
    sa, sb = load_shards(a), load_shards(b)
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_killed_run_resumes_to_the_same_numbers(tiny_model_dir, write_images, tmp_path):
    data = tmp_path / "data"
    write_images(data, 16)
    res = CliRunner().invoke(main, ["evaluate", *_args(data, tiny_model_dir, tmp_path / "ref", "--batch-size", "1")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attngrad", "evaluate", *_args(data, tiny_model_dir, out, "--batch-size", "1")],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    first = out / "shards" / "batch-000000.npz"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("batch-*.npz")))
    assert 1 <= done < 16, f"the run was not cut short ({done} of 16 batches written)"
    assert not (out / "results.json").exists()
    res = CliRunner().invoke(main, ["evaluate", *_args(data, tiny_model_dir, out, "--batch-size", "1", "--resume")])
    assert res.exit_code == 0, res.output
    _same(tmp_path / "ref", out)


def test_two_processes_equal_one(tiny_model_dir, image_dir, tmp_path):
    one = CliRunner().invoke(main, ["evaluate", *_args(image_dir, tiny_model_dir, tmp_path / "one", "--batch-size", "3")])
    assert one.exit_code == 0, one.output
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "attngrad", "evaluate", *_args(image_dir, tiny_model_dir, tmp_path / "two", "--batch-size", "3")]  # fmt: skip
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2
    _same(tmp_path / "one", tmp_path / "two")
