"""``--method-option METHOD.OPTION=VALUE``: parsed and typed by the method's constructor, the same maps
as the API given the same options (explain, compare, explain-text), and the options recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.methods.options import format_options, parse_method_options, registry_options

from .conftest import tiny_vit_config


def test_values_are_typed_by_the_constructor():
    found = parse_method_options(
        ["ig.steps=8", "ig.layer=attention:-1", "ig.baseline=mean", "ig.blur_sigma=2.5", "complete.renormalize=yes"],
        ["ig", "complete"], registry_options)
    assert found == {"ig": {"steps": 8, "layer": "attention:-1", "baseline": "mean", "blur_sigma": 2.5},
                     "complete": {"renormalize": True}}
    assert isinstance(found["ig"]["steps"], int) and isinstance(found["ig"]["blur_sigma"], float)
    assert format_options(found) == ["complete.renormalize=true", "ig.baseline=mean", "ig.blur_sigma=2.5",
                                     "ig.layer=attention:-1", "ig.steps=8"]


@pytest.mark.parametrize("spec, message", [
    ("ig.steps", "METHOD.OPTION=VALUE"), ("steps=3", "METHOD.OPTION=VALUE"), ("ig.=3", "METHOD.OPTION=VALUE"),
    ("gae.start_layer=1", "not among the methods"), ("ig.stepz=3", "no option 'stepz'"),
    ("ig.steps=2.5", "whole number"), ("ig.blur_sigma=wide", "give a number"), ("complete.renormalize=2", "true or false"),
    ("random.seed=1", "takes no options"),
])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(AttngradError, match=message):
        parse_method_options([spec], ["ig", "complete", "random"], registry_options)


def test_api_options_need_the_method():
    from attngrad.methods.options import check_options

    with pytest.raises(AttngradError, match="not among the methods"):
        check_options({"ig": {"steps": 2}}, ["complete"])


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from transformers import ViTForImageClassification

    folder = tmp_path_factory.mktemp("tiny-vit-options") / "tiny"
    torch.manual_seed(0)
    ViTForImageClassification(tiny_vit_config()).save_pretrained(folder)
    return folder


OPTIONS = {"layer": "hidden:1", "baseline": "mean", "steps": 8, "rule": "trapezoid"}
SPECS = ["--method-option", "ig.layer=hidden:1", "--method-option", "ig.baseline=mean",
         "--method-option", "ig.steps=8", "--method-option", "ig.rule=trapezoid"]


def test_explain_with_options_is_the_api_with_options(tiny_folder, tmp_path):
    from attngrad.explainer import Explainer
    from attngrad.io import find_sample
    from attngrad.models import load_model

    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["explain", "el1", "--model", str(tiny_folder), "-m", "ig,complete", *SPECS,
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    (saved,) = (out / "el1").glob("ig_*.npy")
    api = Explainer(load_model(str(tiny_folder))).explain(str(find_sample("el1")), method="ig", options=OPTIONS)
    np.testing.assert_array_equal(np.load(saved), api.maps[0].numpy())
    default = Explainer(load_model(str(tiny_folder))).explain(str(find_sample("el1")), method="ig")
    assert not np.allclose(np.load(saved), default.maps[0].numpy())  # the options did change the map
    record = json.loads((out / "method_options.json").read_text())
    assert record["methods"] == ["ig", "complete"] and record["method_options"] == {"ig": OPTIONS}
    # the recorded specs give the run again
    again = tmp_path / "again"
    specs = [a for s in record["method_option"] for a in ("--method-option", s)]
    r = CliRunner().invoke(main, ["explain", "el1", "--model", str(tiny_folder), "-m", "ig", *specs, "--out", str(again)])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(next((again / "el1").glob("ig_*.npy"))), np.load(saved))


def test_compare_and_text_take_the_same_option(tiny_folder, tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["compare", "el1", "--model", str(tiny_folder), "-m", "ig", "-t", "top1", *SPECS,
                                  "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c" / "method_options.json").read_text())["method_options"] == {"ig": OPTIONS}
    seen = {}

    def fake(texts, methods, **kwargs):  # explain-text hands the options to TextExplainer.explain_methods
        seen.update(kwargs)
        raise AttngradError("stop here")

    import attngrad.cli.text as text_cli

    class Fake:
        explain_methods = staticmethod(fake)

    monkeypatch.setattr(text_cli, "_text_explainer", lambda model, device: Fake())
    r = CliRunner().invoke(main, ["explain-text", "a cat", "-m", "ig", *SPECS, "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "stop here" in r.stderr
    assert seen["options"] == {"ig": OPTIONS}


def test_instances_are_built_with_their_options():
    """The instances the explainers (image, text) build from ``options``, and start_layer given twice."""
    from attngrad.methods import get_method
    from attngrad.methods.options import instance

    built = instance("ig", OPTIONS)
    assert (built.layer, built.baseline, built.steps, built.rule) == ("hidden:1", "mean", 8, "trapezoid")
    assert instance("complete", {"start_layer": 2}, 0).start_layer == 2  # the CLI's default --start-layer 0 yields
    with pytest.raises(AttngradError, match="given twice"):
        instance("complete", {"start_layer": 2}, 1)
    assert type(get_method("ig")) is type(built)
