"""Integrated gradients at any layer (methods/ig.py, methods/_paths.py) against closed forms and
independent computations written here from the equations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attngrad import AttngradError, Explainer
from attngrad.methods import get_method
from attngrad.methods._paths import RULES, integrate, passes, quadrature
from tests.conftest import tiny_vit_config


def _engine(fn, x, base, rule, steps, batch_size=7):
    return integrate(lambda items, pts: fn(pts), x, base, rule=rule, steps=steps, batch_size=batch_size)


@pytest.fixture(scope="module")
def vit64():
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    return Explainer(ViTForImageClassification(tiny_vit_config()).eval().double())


@pytest.fixture(scope="module")
def pixels64():
    torch.manual_seed(3)
    return torch.randn(3, 3, 32, 32, dtype=torch.float64)


# ------------------------------------------------------------------ closed forms on toy functions


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_linear_model_gives_delta_times_weight_at_any_steps(rule, steps):
    torch.manual_seed(0)
    w = torch.randn(6, dtype=torch.float64)
    x, base = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    out = _engine(lambda p: p @ w + 3.0, x, base, rule, steps)
    torch.testing.assert_close(out.attributions, (x - base) * w, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.total, out.target, rtol=0, atol=1e-12)


def _quadratic(q, b):
    return lambda p: ((p @ q) * p).sum(-1) + p @ b


def test_quadratic_model_trapezoid_and_one_node_gauss_are_exact_riemann_is_not():
    torch.manual_seed(1)
    q, b = torch.randn(5, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x, base = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    # closed form: the integrand is linear in alpha, so IG = delta * grad f at the path's midpoint
    mid = (x + base) / 2
    exact = (x - base) * (mid @ (q + q.T) + b)
    for rule, steps in [("trapezoid", 1), ("trapezoid", 3), ("gauss_legendre", 1), ("gauss_legendre", 4)]:
        out = _engine(_quadratic(q, b), x, base, rule, steps)
        torch.testing.assert_close(out.attributions, exact, rtol=0, atol=1e-12)
        torch.testing.assert_close(out.total, out.target, rtol=0, atol=1e-12)
    left = _engine(_quadratic(q, b), x, base, "riemann_left", 4)
    assert (left.attributions - exact).abs().max() > 1e-3  # degree 0 only: the check can fail


def test_cubic_model_gauss_legendre_exact_for_its_degree_trapezoid_converges_as_h2():
    torch.manual_seed(2)
    c = torch.randn(4, dtype=torch.float64)
    x, base = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    f = lambda p: (c * p**3).sum(-1)  # noqa: E731
    # closed form: integral of 3 c (x' + a d)^2 d over [0, 1] = c (x^3 - x'^3) per coordinate
    exact = c * (x**3 - base**3)
    torch.testing.assert_close(_engine(f, x, base, "gauss_legendre", 2).attributions, exact, rtol=0, atol=1e-12)
    assert (_engine(f, x, base, "gauss_legendre", 1).attributions - exact).abs().max() > 1e-3
    errors = [(_engine(f, x, base, "trapezoid", s).attributions - exact).abs().max().item() for s in (4, 8)]
    assert errors[0] > 1e-6 and errors[1] == pytest.approx(errors[0] / 4, rel=1e-6)  # error = c h^2 exactly


def test_quadrature_weights_and_passes():
    for rule in RULES:
        for steps in (1, 3, 8):
            nodes, weights = quadrature(rule, steps)
            assert weights.sum() == pytest.approx(1.0) and len(nodes) == passes(rule, steps)
            assert ((nodes >= 0) & (nodes <= 1)).all()
    assert quadrature("riemann_right", 1)[0].tolist() == [1.0]


# ------------------------------------------------------------------ on a ViT


def test_completeness_to_the_quadrature_error_and_convergence(vit64, pixels64):
    errs = {}
    for steps in (2, 8, 32):
        m = get_method("ig", layer="input", steps=steps, rule="trapezoid", batch_size=40)
        trace = vit64.trace(pixels64, methods=[m])
        _, res = m.path(trace)
        # the ends are the loss at the input (the trace's own logit) and at the all-zero input
        own = trace.logits.gather(1, trace.targets.view(-1, 1))[:, 0]
        torch.testing.assert_close(res.f_input, own)
        zero = vit64.adapter.forward(torch.zeros_like(pixels64)).logits.gather(1, trace.targets.view(-1, 1))[:, 0]
        torch.testing.assert_close(res.f_baseline, zero.detach())
        errs[steps] = res.error()["absolute"].max().item()
        # the map's token scores carry the whole sum (special tokens get no pixel attribution)
        torch.testing.assert_close(m.token_scores(trace).sum(dim=1), res.total)
    assert errs[32] < errs[8] < errs[2]
    gl = get_method("ig", layer="attention:2", steps=16, rule="gauss_legendre")
    _, res = gl.path(vit64.trace(pixels64, methods=[gl]))
    assert res.error()["relative"].max() < 1e-9


def test_batched_equals_one_by_one(vit64, pixels64):
    for layer in ("input", "hidden:1", "attention:0"):
        m = get_method("ig", layer=layer, baseline="mean", steps=3, rule="gauss_legendre", batch_size=64)
        together = m(vit64.trace(pixels64, methods=[m]))
        small = get_method("ig", layer=layer, baseline="mean", steps=3, rule="gauss_legendre", batch_size=2)
        chunked = small(vit64.trace(pixels64, methods=[small]))
        alone = torch.cat([m(vit64.trace(pixels64[i : i + 1], methods=[m])) for i in range(3)])
        torch.testing.assert_close(together, chunked)
        torch.testing.assert_close(together, alone)


def test_attention_path_at_one_right_node_from_zero_is_completes_layer_term(vit64, pixels64):
    """At baseline 0 the integrand at alpha = 1 is A ⊙ ∇f(A): the right Riemann rule with one
    node (weight 1) is exactly the first-order term of ``complete`` (eq. 5) in that layer."""
    trace = vit64.trace(pixels64)  # the shared pass: maps and their gradients
    for layer in range(3):
        term = torch.zeros(3, 17, dtype=torch.float64)
        a, g = trace.attentions[layer], trace.gradients[layer]
        for h in range(a.shape[1]):  # summed over heads and query rows onto the key tokens
            for i in range(a.shape[2]):
                term += g[:, h, i, :] * a[:, h, i, :]
        m = get_method("ig", layer=f"attention:{layer}", baseline="zero", steps=1, rule="riemann_right")
        torch.testing.assert_close(m.token_scores(vit64.trace(pixels64, methods=[m])), term)


def test_grad_x_input_and_hidden_first_order_terms(vit64, pixels64):
    x = pixels64.clone().requires_grad_(True)
    logits = vit64.adapter.forward(x).logits
    target = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), x)
    per_pixel = (grad * pixels64).sum(dim=1)
    expected = torch.zeros(3, 4, 4, dtype=torch.float64)
    for r in range(4):
        for c in range(4):
            expected[:, r, c] = per_pixel[:, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8].sum(dim=(1, 2))
    m = get_method("grad_x_input")
    torch.testing.assert_close(m(vit64.trace(pixels64, methods=[m])), expected)
    # hidden:1 at one right node from 0 = h ⊙ ∂f/∂h, with the block output's gradient taken here by a hook
    seen = {}
    block = vit64.adapter.model.vit.layers[1]  # transformers 5: base_model.layers

    def keep(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        out.retain_grad()
        seen["h"] = out

    handle = block.register_forward_hook(keep)
    try:
        out = vit64.adapter.forward(pixels64)
        out.logits.gather(1, target.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
    h = seen["h"]
    m = get_method("ig", layer="hidden:1", steps=1, rule="riemann_right")
    torch.testing.assert_close(m.token_scores(vit64.trace(pixels64, methods=[m])), (h.grad * h).sum(-1).detach())


def test_baselines(vit64, pixels64):
    trace = vit64.trace(pixels64)
    for layer, baseline in [("input", "blur"), ("input", "mean"), ("attention:1", "uniform"), ("hidden:2", "zero"),
                            ("input", torch.zeros(1, 3, 32, 32, dtype=torch.float64))]:
        m = get_method("ig", layer=layer, baseline=baseline, steps=24, rule="gauss_legendre")
        _, res = m.path(vit64.trace(pixels64, methods=[m]))
        assert res.error()["relative"].max() < 1e-2, (layer, baseline)
    # a uniform attention baseline: f(x') is the loss with layer 1's rows all 1/N
    maps = [None, torch.full_like(trace.attentions[1], 1 / 17), None]
    with vit64.adapter.override_attention(maps):
        uniform = vit64.adapter.forward(pixels64).logits.gather(1, trace.targets.view(-1, 1))[:, 0]
    m = get_method("ig", layer="attention:1", baseline="uniform", steps=2)
    _, res = m.path(vit64.trace(pixels64, methods=[m]))
    torch.testing.assert_close(res.f_baseline, uniform.detach())


def test_timm_vit_paths():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=4, embed_dim=24, num_heads=2).eval().double()
    ex = Explainer(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for layer, baseline in (("input", "zero"), ("hidden:0", "mean"), ("attention:1", "zero")):
        m = get_method("ig", layer=layer, baseline=baseline, steps=24)
        trace = ex.trace(x, methods=[m])
        _, res = m.path(trace)
        assert m(trace).shape == (2, 4, 4) and res.error()["relative"].max() < 1e-3, (layer, res.error())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layer": "block:1"}, "layer must be 'input', 'hidden:K' or 'attention:K'"),
        ({"baseline": "noise"}, "unknown baseline 'noise'"),
        ({"rule": "simpson"}, "unknown rule 'simpson'"),
        ({"steps": 0}, "steps must be an integer from 1"),
        ({"batch_size": -1}, "batch_size must be an integer from 1"),
        ({"blur_sigma": float("nan")}, "blur_sigma must be a number"),
        ({"baseline": torch.tensor([float("inf")])}, "NaN or infinite"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(AttngradError, match=message):
        get_method("ig", **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layer": "attention:3"}, "out of range; this model has blocks 0..2"),
        ({"layer": "hidden:-4"}, "out of range"),
        ({"layer": "attention:0", "baseline": "blur"}, "'blur' is for pixels"),
        ({"layer": "input", "baseline": "uniform"}, "uniform attention row"),
        ({"layer": "input", "baseline": "pad"}, "replaces tokens"),
        ({"layer": "input", "baseline": torch.zeros(2, 3, 8, 8)}, "does not broadcast"),
    ],
)
def test_options_checked_against_the_model(vit64, pixels64, options, message):
    m = get_method("ig", **options)
    with pytest.raises(AttngradError, match=message):
        m(vit64.trace(pixels64, methods=[m]))


def test_two_class_loss_without_the_loss_is_refused(vit64, pixels64):
    m = get_method("ig")
    trace = vit64.trace(pixels64, methods=[m], loss="diff", contrast="top2")
    trace.extras.pop("loss", None)
    with pytest.raises(AttngradError, match="two-class loss"):
        m(trace)
    assert np.isfinite(m(vit64.trace(pixels64, methods=[m])).numpy()).all()


def test_explain_and_compare_through_the_api(vit64, pixels64):
    """The family is used like any registered method: by name with defaults, or as a configured instance."""
    by_name = vit64.explain(pixels64, method="ig")
    configured = vit64.explain(pixels64, method=get_method("ig", layer="attention:-1", baseline="uniform", steps=4))
    both = vit64.explain_methods(pixels64, ["ig", "grad_x_input", "complete"])
    assert by_name.maps.shape == configured.maps.shape == (3, 4, 4)
    torch.testing.assert_close(torch.as_tensor(both["ig"].maps), torch.as_tensor(by_name.maps))
    blur2 = get_method("ig", baseline="blur", blur_sigma=2.0, steps=2)
    blur9 = get_method("ig", baseline="blur", blur_sigma=9.0, steps=2)
    trace = vit64.trace(pixels64, methods=[blur2, blur9])
    assert not torch.equal(blur2(trace), blur9(trace))  # one trace, two configurations, two results
