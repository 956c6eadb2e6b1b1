"""The command line: outputs, one-line errors with exit code 2, help texts.

Two tests run the installed ``attngrad`` entry point in a subprocess; the rest use
click's in-process runner on the same ``main``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.demo import asset_image

from .conftest import tiny_vit_config

EL1 = str(asset_image("el1.jpg"))


def run(*args):
    return subprocess.run([sys.executable, "-m", "attngrad", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_explain_subprocess_writes_maps_and_prints_top5(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    proc = run("explain", EL1, str(bad), "--method", "complete,gae", "-t", "zebra", "-t", "top2", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2  # one image failed; the other was still written
    assert "el1.jpg: zebra 0.41" in proc.stdout
    assert "bad.jpg: not an image" in proc.stderr and "Traceback" not in proc.stderr
    files = sorted(p.name for p in (tmp_path / "o" / "el1").iterdir())
    assert files == sorted(f"{m}_{c}.{e}" for m in ("complete", "gae") for c in ("zebra", "African_elephant")
                           for e in ("png", "npy"))
    assert np.load(tmp_path / "o" / "el1" / "complete_zebra.npy").shape == (14, 14)


@pytest.mark.slow
def test_demo_subprocess(tmp_path):
    proc = run("demo", "--out", str(tmp_path / "d"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "d" / "index.html").read_text()
    assert "el1.png" in html and "catdog.png" in html and "African elephant" in html and "bull mastiff" in html
    assert "compare.html" in html and (tmp_path / "d" / "el1_compare.png").exists()
    assert (tmp_path / "d" / "el1.png").stat().st_size > 10_000
    assert "clip_el1.png" in html and "stand-in" in html and (tmp_path / "d" / "clip_el1.png").stat().st_size > 10_000
    assert "vlm_el1.png" in html and "zebra against elephant" in html and "not LLaVA" in html
    assert (tmp_path / "d" / "vlm_el1.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny"
    ViTForImageClassification(tiny_vit_config()).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "missing.jpg"], "missing.jpg: no such file"),
        (["explain", EL1, "--target", "zebar"], "unknown class 'zebar'; did you mean 'zebra'"),
        (["explain", EL1, "--target", "99"], "class index 99 is out of range"),
        (["explain", EL1, "--method", "gradcam"], "unknown method 'gradcam'"),
        (["explain", EL1, "--loss", "kl"], "unknown loss 'kl'"),
        (["explain", EL1, "--loss", "normdiff"], "give a contrast class"),
    ],
)
def test_one_line_errors_exit_2(tiny_model_dir, tmp_path, args, message):
    result = CliRunner().invoke(main, [*args, "--model", tiny_model_dir, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("attngrad: error")]
    assert len(lines) == 1 and "Traceback" not in result.output


def test_model_folder_without_weights(tmp_path):
    tiny_vit_config().to_json_file(tmp_path / "config.json")
    result = CliRunner().invoke(main, ["predict", EL1, "--model", str(tmp_path)])
    assert result.exit_code == 2 and "no weights" in result.output


def test_debug_shows_traceback(tiny_model_dir):
    result = CliRunner().invoke(main, ["--debug", "explain", "missing.jpg", "--model", tiny_model_dir])
    assert result.exit_code != 0 and result.exception is not None


@pytest.mark.parametrize("command", ["explain", "predict", "classes", "demo"])
def test_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and "--model" in result.output


def test_classes_search():
    result = CliRunner().invoke(main, ["classes", "--search", "zebra"])
    assert result.output.strip() == "340\tzebra"


# ---------------------------------------------------------------------- newcomer path


def test_sample_short_names_work_in_an_empty_folder(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["predict", "el1", "snail.jpg", "-k", "2", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("el1: ") and lines[1].startswith("snail.jpg: ") and lines[0].count(",") == 1
    assert "short name" in CliRunner().invoke(main, ["explain", "--help"]).output


def test_targets_as_repeated_options_and_comma_lists(tiny_model_dir, tmp_path):
    args = ["explain", EL1, "--model", tiny_model_dir, "--out", str(tmp_path), "-t", "zebra,dog", "-t", "cat",
            "-t", "tench, Tinca tinca"]  # a class name with a comma stays whole
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "el1").glob("*.npy")) == [
        "complete_cat.npy", "complete_dog.npy", "complete_tench__Tinca_tinca.npy", "complete_zebra.npy"]


def test_compare_targets_both_forms(tiny_model_dir, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from attngrad.cli import compare as compare_cli

    seen = []

    def fake_grid(explainer, image, targets, methods, loss, **kwargs):
        seen.append((list(targets), list(methods)))
        return plt.figure()

    monkeypatch.setattr(compare_cli, "comparison_grid", fake_grid)
    for form in (["-t", "zebra,dog", "-t", "cat"], ["--targets", "zebra", "--targets", "dog,cat"]):
        result = CliRunner().invoke(main, ["compare", EL1, *form, "-m", "complete,gae", "--model", tiny_model_dir,
                                           "--out", str(tmp_path)])  # fmt: skip
        assert result.exit_code == 0, result.output
    assert seen == [(["zebra", "dog", "cat"], ["complete", "gae"])] * 2
    assert (tmp_path / "el1_compare.png").exists()


def test_classes_reads_the_configuration_without_loading_weights(tiny_model_dir, monkeypatch):
    import attngrad.models as models

    def refuse(*args, **kwargs):
        raise AssertionError("classes must not load the model")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models.HFAdapter, "from_pretrained", refuse)
    result = CliRunner().invoke(main, ["classes", "--model", tiny_model_dir])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["0\tcat", "1\tdog", "2\tzebra", "3\tAfrican elephant", "4\ttench, Tinca tinca"]


def test_help_lists_every_registered_method():
    from attngrad.methods import METHODS

    top = CliRunner().invoke(main, ["--help"]).output
    explain_help = " ".join(CliRunner().invoke(main, ["explain", "--help"]).output.split())
    for name in METHODS:
        assert name in top and name in explain_help, name
    assert f"Methods ({len(METHODS)})" in " ".join(top.split())


def test_model_help_warns_about_the_two_vit_ti_copies():
    text = " ".join(CliRunner().invoke(main, ["predict", "--help"]).output.split())
    assert "248" in text and "squash" in text


# ---------------------------------------------------------------------- output folders


def test_failed_command_removes_only_the_folders_it_created(tiny_model_dir, tmp_path):
    new = tmp_path / "a" / "b" / "out"
    result = CliRunner().invoke(main, ["explain", EL1, "-t", "zebar", "--model", tiny_model_dir, "--out", str(new)])
    assert result.exit_code == 2 and not (tmp_path / "a").exists()
    kept = tmp_path / "kept"  # an existing (empty) folder is never removed
    kept.mkdir()
    result = CliRunner().invoke(main, ["explain", EL1, "-t", "zebar", "--model", tiny_model_dir, "--out", str(kept)])
    assert result.exit_code == 2 and kept.is_dir()


def test_partly_failed_command_keeps_what_it_wrote(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["explain", EL1, str(bad), "--model", tiny_model_dir, "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith("attngrad: skipped: ") and "1 of 2 images" in result.stderr
    assert len(list((out / "el1").glob("complete_*.npy"))) == 1


def test_usage_errors_use_the_one_line_form():
    result = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "attngrad: error: serve: invalid value for '--port': 0 is not in the range 1<=x<=65535 (see 'attngrad serve --help')"
    ]
