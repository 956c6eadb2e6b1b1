"""``evaluate attribution-error`` and its library (evaluation/attribution_error.py) on a tiny ViT."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from attngrad import Explainer
from attngrad.cli import main
from attngrad.evaluation.attribution_error import Config, first_order_configs, image_path_fn, measure, summarise
from tests.conftest import tiny_vit_config


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from transformers import ViTForImageClassification

    from attngrad.io import find_sample

    root = tmp_path_factory.mktemp("attribution-error")
    torch.manual_seed(0)
    ViTForImageClassification(tiny_vit_config()).save_pretrained(root / "tiny")
    (root / "images").mkdir()
    for name in ("zebra", "tusker"):
        src = find_sample(name)
        (root / "images" / src.name).write_bytes(src.read_bytes())
    return root


@pytest.fixture(scope="module")
def ex64():
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    return Explainer(ViTForImageClassification(tiny_vit_config()).double().eval())


def test_first_order_rows_are_their_closed_forms(ex64):
    tiny_explainer = ex64
    """The error rows of the first-order methods: totals = Σ ∇A ⊙ A of the shared pass, targets = f(x) - f(A_k = 0)."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    rows = measure(image_path_fn(tiny_explainer, x), first_order_configs(3))
    trace = tiny_explainer.trace(x)
    for k in range(3):
        got = [r for r in rows if r["method"] == f"complete term {k}"]
        total = (trace.gradients[k] * trace.attentions[k]).sum(dim=(1, 2, 3))
        maps = [None] * 3
        maps[k] = torch.zeros_like(trace.attentions[k])
        with torch.no_grad(), tiny_explainer.adapter.override_attention(maps):
            zero = tiny_explainer.adapter.forward(x).logits.gather(1, trace.targets.view(-1, 1))[:, 0]
        own = trace.logits.gather(1, trace.targets.view(-1, 1))[:, 0]
        for i, row in enumerate(got):
            assert row["total"] == pytest.approx(float(total[i]), rel=1e-4, abs=1e-6)
            assert row["target"] == pytest.approx(float(own[i] - zero[i]), rel=1e-4, abs=1e-6)
            assert row["absolute"] == pytest.approx(abs(row["total"] - row["target"]), abs=1e-6)
    assert {r["method"] for r in rows} == {"grad_x_input", "complete term 0", "complete term 1", "complete term 2"}


def test_ig_error_falls_with_steps(ex64):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    configs = [Config("ig", "attention:1", "zero", "gauss_legendre", s) for s in (1, 2, 8)]
    summary = summarise(measure(image_path_fn(ex64, x), configs))
    errors = [s["mean_absolute"] for s in summary]
    assert errors[2] < errors[1] < errors[0] and errors[2] < 1e-8


def test_cli_writes_results(tiny_folder, tmp_path):
    out = tmp_path / "out"
    args = ["evaluate", "attribution-error", "--data", str(tiny_folder / "images"), "--model", str(tiny_folder / "tiny"),
            "--layers", "input,hidden:1,attention:2", "--baselines", "zero", "--rules", "trapezoid,gauss_legendre",
            "--steps", "1,8", "--out", str(out), "--items-per-pass", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["items"] == 2 and len(data["rows"]) == 2 * (4 + 3 * 2 * 2)
    assert {s["method"] for s in data["summary"]} == {"grad_x_input", "complete term 0", "complete term 1",
                                                      "complete term 2", "ig"}
    assert (out / "results.csv").is_file() and "| ig | attention:2 |" in (out / "results.md").read_text()


def test_a_path_with_nan_is_refused_not_tabulated():
    """A model undefined somewhere on the path (SmolLM2 at an all-zero input, riemann_left evaluates it) gave NaN
    rows in the table with exit 0; the run is refused instead, naming the configuration."""
    from types import SimpleNamespace

    from attngrad.errors import AttngradError

    def path(config):
        total = torch.tensor([1.0, float("nan")])
        return SimpleNamespace(error=lambda: {"target": torch.ones(2), "total": total, "absolute": (total - 1).abs(),
                                              "relative": (total - 1).abs()})

    config = Config("ig", "input", "zero", "riemann_left", 4)
    with pytest.raises(AttngradError, match="ig at input from the zero baseline .riemann_left, 4 steps. gave NaN"):
        measure(path, [config])
