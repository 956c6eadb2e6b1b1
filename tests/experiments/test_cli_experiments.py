"""CLI: `rewrite` end to end in a subprocess; `transfer`, `detail`, `explain --guide` and bad inputs in-process."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from attngrad import load_image
from attngrad.cli import main
from attngrad.demo import asset_image

TUSKER = str(asset_image("n01871265_tusker.jpg"))
ZEBRA = str(asset_image("n02391049_zebra.jpg"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from attngrad.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.mark.slow
def test_transfer_command(runner, tmp_path):
    res = runner.invoke(main, ["transfer", str(asset_image("el1.jpg")), "--target", "zebra", "--opposing",
                               "African elephant", "--steps", "3", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "max difference 0" in res.output
    with (tmp_path / "el1_transfer.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and float(rows[3]["target_logit"]) < float(rows[0]["target_logit"])
    assert (tmp_path / "el1_transfer.gif").stat().st_size > 0 and (tmp_path / "el1_transfer.png").exists()


@pytest.mark.slow
def test_rewrite_command_round_trip(tmp_path):
    proc = run_cli("rewrite", TUSKER, "--to", "bull mastiff", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    numbers = json.loads((tmp_path / "n01871265_tusker_to_bull_mastiff.json").read_text())
    assert numbers["success"] and numbers["linf_255"] <= 2 and numbers["psnr_db"] >= 40
    assert numbers["after_top5"][0]["label"] == "bull mastiff" and numbers["after_top5"][0]["probability"] >= 0.9
    assert load_image(tmp_path / "n01871265_tusker_to_bull_mastiff.png").size == (224, 224)
    assert (tmp_path / "n01871265_tusker_to_bull_mastiff_before_after.png").exists()


@pytest.mark.slow
def test_rewrite_batch_mode_over_a_folder(runner, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("n02391049_zebra.jpg", "n01944390_snail.jpg", "n01608432_kite.jpg"):
        (folder / name).write_bytes(asset_image(name).read_bytes())
    res = runner.invoke(main, ["rewrite", str(folder), "--to", "random", "--limit", "2", "--steps", "2",
                               "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 2 and 0.0 <= summary["success_rate"] <= 1.0
    with (tmp_path / "out" / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    # --limit 2 spreads over the sorted folder: the first and the last file
    assert [r["source"].rsplit("/", 1)[-1] for r in rows] == ["n01608432_kite.jpg", "n02391049_zebra.jpg"]
    assert all(int(r["linf_255"]) <= 2 for r in rows)


@pytest.mark.slow
def test_detail_and_guided_explain_in_process(runner, tmp_path):
    res = runner.invoke(main, ["detail", str(asset_image("n01944390_snail.jpg")), "-k", "3", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "n01944390_snail_detail.png").exists()
    assert len(list(tmp_path.glob("n01944390_snail_snail_vs_*.npy"))) == 2
    res = runner.invoke(main, ["explain", TUSKER, "--guide", ZEBRA, "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g" / "n01871265_tusker" / "complete_tusker_stitched.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["rewrite", TUSKER, "--to", "tusker"], "already classified"),
        (["rewrite", TUSKER, "--to", "bull mastiff", "--eps", "0"], "--eps"),
        (["explain", ZEBRA, "--guide", ZEBRA], "another class"),
        (["transfer", "missing.jpg"], "no such file"),
        (["detail", TUSKER, "--contrast", "tusker"], "contrast equals the target"),
        (["rewrite", "EMPTY", "--to", "bull mastiff"], "empty"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(runner, tmp_path, args, message):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    res = runner.invoke(main, [*args, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert message in res.output and res.output.count("attngrad: error:") == 1


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch
    from transformers import ViTForImageClassification

    from ..conftest import tiny_vit_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny"
    ViTForImageClassification(tiny_vit_config()).save_pretrained(path)
    return str(path)


def test_transfer_counts_every_step_once(runner, tiny_model_dir, tmp_path):
    """--steps 2: states 0, 1, 2 (step 0 printed once), and the progress bar reaches 3/3."""
    res = runner.invoke(main, ["transfer", "el1", "--model", tiny_model_dir, "-t", "zebra", "--opposing", "dog",
                               "--steps", "2", "--out", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3/3" in res.stderr.rstrip().split("\r")[-1]  # the bar's final state
    assert [line.split(":")[0] for line in res.stdout.splitlines() if line.startswith("step ")] == ["step 0", "step 2"]
    with (tmp_path / "el1_transfer.csv").open() as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [0, 1, 2]
    assert "--steps" in runner.invoke(main, ["transfer", "el1", "--steps", "0"]).stderr


def test_detail_gallery_must_exist(runner, tmp_path):
    res = runner.invoke(main, ["detail", "snail", "--gallery", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--gallery" in res.stderr and not (tmp_path / "o").exists()
