"""Each propagation rule of method.md ("T-Attr") against an explicit computation by loops or by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attngrad.errors import AttngradError
from attngrad.methods.relprop import (
    matmul_relevance,
    model_layout,
    record_activations,
    residual_split,
    safe_divide,
    zb_conv,
    zplus_linear,
)


def test_safe_divide_adds_eps_and_zeroes_exact_zero_denominators():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    b = torch.tensor([2.0, 0.0, -4.0, 1e-12], dtype=torch.float64)
    out = safe_divide(a, b)
    expected = torch.tensor([1.0 / (2.0 + 1e-9), 0.0, 3.0 / (-4.0 + 1e-9), 4.0 / (1e-12 + 1e-9)], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)


def test_zplus_linear_matches_loops():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    w = torch.randn(5, 4, dtype=torch.float64)
    r = torch.randn(2, 3, 5, dtype=torch.float64)
    expected = torch.zeros_like(x)
    reached = 0.0  # relevance of outputs with Z > 0: with 4 inputs some Z are exactly 0 and drop theirs
    for b in range(2):
        for n in range(3):
            for j in range(5):
                contrib = [max(w[j, i], 0) * max(x[b, n, i], 0) + min(w[j, i], 0) * min(x[b, n, i], 0) for i in range(4)]
                z = sum(contrib)
                reached += float(r[b, n, j]) if z > 0 else 0.0
                for i in range(4):
                    expected[b, n, i] += contrib[i] * r[b, n, j] / (z + 1e-9)
    out = zplus_linear(x, w, r)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    # z+ conserves wherever Z > 0: every Z is a sum of non-negative terms
    assert abs(out.sum().item() - reached) < 1e-6 and reached != pytest.approx(r.sum().item())


def test_zplus_linear_keeps_positive_relevance_positive():
    torch.manual_seed(1)
    x, w = torch.randn(7, 6), torch.randn(3, 6)
    out = zplus_linear(x, w, torch.rand(7, 3))
    # exactly zero terms can come out as float rounding (|x| S|W| and x SW computed apart)
    assert (out >= -1e-6 * out.abs().max()).all() and (out > 1e-3).sum() > 10
    # the recorded output (x W^T + b) gives the same as recomputing x W^T
    b = torch.randn(3)
    r = torch.rand(7, 3)
    torch.testing.assert_close(zplus_linear(x, w, r, x @ w.T + b, b), zplus_linear(x, w, r))


def test_residual_split_by_hand():
    # one image, y = a + b with two entries
    a = torch.tensor([[[1.0, 3.0]]], dtype=torch.float64)
    b = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    r = torch.tensor([[[4.0, 2.0]]], dtype=torch.float64)
    # first step: R_a = a R / y = [2, 3], R_b = b R / y = [2, -1]; sums 5 and 1
    # rescaled so totals split sum R = 6 as |5| : |1| -> 5 and 1 (unchanged here)
    r_a, r_b = residual_split(a, b, r)
    torch.testing.assert_close(r_a, torch.tensor([[[2.0, 3.0]]], dtype=torch.float64), rtol=1e-8, atol=0)
    torch.testing.assert_close(r_b, torch.tensor([[[2.0, -1.0]]], dtype=torch.float64), rtol=1e-8, atol=0)


def test_residual_split_rescales_by_absolute_sums_per_image():
    a = torch.tensor([[[2.0, 0.0]], [[1.0, 1.0]]], dtype=torch.float64)
    b = torch.tensor([[[-1.0, 1.0]], [[1.0, 1.0]]], dtype=torch.float64)
    r = torch.tensor([[[1.0, 1.0]], [[3.0, 1.0]]], dtype=torch.float64)
    r_a, r_b = residual_split(a, b, r)
    # image 0: y = [1, 1]; R_a = [2, 0] (sum 2), R_b = [-1, 1] (sum 0) -> all of sum R = 2 goes to a
    torch.testing.assert_close(r_a[0], torch.tensor([[2.0, 0.0]], dtype=torch.float64), rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(r_b[0], torch.zeros(1, 2, dtype=torch.float64), rtol=0, atol=1e-12)
    # image 1: y = [2, 2]; R_a = R_b = [1.5, 0.5]; sums 2 : 2 of total 4 -> unchanged
    torch.testing.assert_close(r_a[1], torch.tensor([[1.5, 0.5]], dtype=torch.float64), rtol=1e-8, atol=0)
    torch.testing.assert_close(r_b[1], torch.tensor([[1.5, 0.5]], dtype=torch.float64), rtol=1e-8, atol=0)
    # a case that rescales: y = [1, 1], R = [1, 1]; R_a = [3, 0] (sum 3), R_b = [-2, 1] (sum -1)
    r_a, r_b = residual_split(torch.tensor([[[3.0, 0.0]]]), torch.tensor([[[-2.0, 1.0]]]), torch.ones(1, 1, 2))
    # totals: 2 * 3/4 = 1.5 for a (scale 0.5), 2 * 1/4 = 0.5 for b (scale -0.5)
    torch.testing.assert_close(r_a, torch.tensor([[[1.5, 0.0]]]))
    torch.testing.assert_close(r_b, torch.tensor([[[1.0, -0.5]]]))
    # batched == alone
    alone = residual_split(a[1:], b[1:], r[1:])
    torch.testing.assert_close(residual_split(a, b, r)[0][1:], alone[0])


def test_matmul_relevance_matches_loops_and_halves():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    y = torch.randn(2, 4, 5, dtype=torch.float64)
    r = torch.randn(2, 3, 5, dtype=torch.float64)
    rx = torch.zeros_like(x)
    ry = torch.zeros_like(y)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                z = sum(x[b, i, k] * y[b, k, j] for k in range(4))
                for k in range(4):
                    share = x[b, i, k] * y[b, k, j] * r[b, i, j] / (z + 1e-9)
                    rx[b, i, k] += share / 2
                    ry[b, k, j] += share / 2
    out_x, out_y = matmul_relevance(x, y, r)
    torch.testing.assert_close(out_x, rx, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out_y, ry, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out_x.sum() + out_y.sum(), r.sum(), rtol=1e-8, atol=0)
    # the forward's own product (A V is recorded as the projection's input) gives the same, untouched
    product = x @ y
    kept = product.clone()
    given = matmul_relevance(x, y, r, product=product)
    assert torch.equal(given[0], out_x) and torch.equal(given[1], out_y) and torch.equal(product, kept)


def test_zb_conv_matches_loops():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 2, kernel_size=2, stride=2, bias=True).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    r = torch.rand(2, 2, 2, 2, dtype=torch.float64)
    w = conv.weight.detach()
    expected = torch.zeros_like(x)
    for b in range(2):
        low, high = x[b].min(), x[b].max()  # per image
        for o in range(2):
            for gy in range(2):
                for gx in range(2):
                    cells = [(c, 2 * gy + dy, 2 * gx + dx, dy, dx) for c in range(3) for dy in range(2) for dx in range(2)]
                    contrib = {}
                    for c, py, px, dy, dx in cells:
                        wt = w[o, c, dy, dx]
                        contrib[(c, py, px)] = x[b, c, py, px] * wt - low * max(wt, 0) - high * min(wt, 0)
                    z = sum(contrib.values()) + 1e-9
                    for (c, py, px), v in contrib.items():
                        expected[b, c, py, px] += v * r[b, o, gy, gx] / z
    out = zb_conv(x, conv, r)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), r.sum(dim=(1, 2, 3)), rtol=1e-8, atol=0)


def test_unsupported_models_raise_naming_what_is_supported():
    with pytest.raises(AttngradError, match="supported: Hugging Face ViTForImageClassification"):
        model_layout(nn.Sequential(nn.Linear(3, 3)))
    timm = pytest.importorskip("timm")
    pooled = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=5,
                               global_pool="avg")
    with pytest.raises(AttngradError, match="class token"):
        model_layout(pooled)


def test_hooks_record_and_remove_themselves(tiny_vit):
    before = sum(len(m._forward_hooks) for m in tiny_vit.modules())
    with record_activations(tiny_vit) as rec:
        assert sum(len(m._forward_hooks) for m in tiny_vit.modules()) > before
        with torch.no_grad():
            tiny_vit(pixel_values=torch.randn(2, 3, 32, 32))
    assert sum(len(m._forward_hooks) for m in tiny_vit.modules()) == before
    assert rec.pooled.shape == (2, 32) and rec.pixels.shape == (2, 3, 32, 32)
    assert all(len(b.qkv) == 3 and b.act.shape == (2, 17, 64) for b in rec.blocks)
    # the recorded pieces fit together: mid = x + attn_out, the next block's input = mid + mlp_out
    torch.testing.assert_close(rec.blocks[0].mid, rec.blocks[0].x + rec.blocks[0].attn_out)
    torch.testing.assert_close(rec.blocks[1].x, rec.blocks[0].mid + rec.blocks[0].mlp_out)


def test_one_table_serves_the_blocks_and_the_relevance_layout(tiny_vit):
    """relprop's layout and the rivals' block access read the same family of ``_blocks.FAMILIES``."""
    from attngrad.methods._blocks import blocks, family

    fam = family(tiny_vit)
    layout = model_layout(tiny_vit)
    assert fam.name == "transformers" and [b.norm1 for b in layout.blocks] == [fam.find(b, "norm1") for b in blocks(tiny_vit)]
    assert layout.blocks[0].qkv == fam.qkv_linears(blocks(tiny_vit)[0]) and layout.blocks[0].num_heads == 2
    timm = pytest.importorskip("timm")
    tm = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5)
    assert family(tm).name == "timm" and [b.qkv for b in model_layout(tm).blocks] == [[b.attn.qkv] for b in tm.blocks]
    with pytest.raises(AttngradError, match="cannot find its Transformer blocks"):
        blocks(nn.Sequential(nn.Linear(3, 3)))


def test_epsilon_adds_signed_epsilon_to_the_z_rule_denominators():
    # residual: y = [1, -0.5]; y + eps sign(y) = [1.5, -1] with eps = 0.5
    a = torch.tensor([[[3.0, 0.5]]], dtype=torch.float64)
    b = torch.tensor([[[-2.0, -1.0]]], dtype=torch.float64)
    r = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    r_a, r_b = residual_split(a, b, r, epsilon=0.5)
    raw_a = torch.tensor([3.0 / 1.5, 0.5 * 2 / -1.0], dtype=torch.float64)  # [2, -1], sum 1
    raw_b = torch.tensor([-2.0 / 1.5, -1.0 * 2 / -1.0], dtype=torch.float64)  # [-4/3, 2], sum 2/3
    total, sa, sb = 3.0, raw_a.sum(), raw_b.sum()
    torch.testing.assert_close(r_a[0, 0], raw_a * (abs(sa) / (abs(sa) + abs(sb)) * total / sa), rtol=1e-8, atol=0)
    torch.testing.assert_close(r_b[0, 0], raw_b * (abs(sb) / (abs(sa) + abs(sb)) * total / sb), rtol=1e-8, atol=0)
    # bilinear product: loops with Z + eps sign(Z) (a zero Z counts as positive)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    y = torch.randn(2, 4, 5, dtype=torch.float64)
    y[0, :, 0] = 0  # Z = 0 there: divided by +eps, contributions 0
    r = torch.randn(2, 3, 5, dtype=torch.float64)
    rx, ry = torch.zeros_like(x), torch.zeros_like(y)
    for bb in range(2):
        for i in range(3):
            for j in range(5):
                z = sum(x[bb, i, k] * y[bb, k, j] for k in range(4))
                z = z + (0.25 if z >= 0 else -0.25) + 1e-9  # then safe_divide's own 1e-9
                for k in range(4):
                    rx[bb, i, k] += x[bb, i, k] * y[bb, k, j] * r[bb, i, j] / z / 2
                    ry[bb, k, j] += x[bb, i, k] * y[bb, k, j] * r[bb, i, j] / z / 2
    out_x, out_y = matmul_relevance(x, y, r, epsilon=0.25)
    torch.testing.assert_close(out_x, rx, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out_y, ry, rtol=1e-9, atol=1e-12)
    # 0 is the reference rule exactly
    assert torch.equal(matmul_relevance(x, y, r, epsilon=0.0)[0], matmul_relevance(x, y, r)[0])


def test_lrp_epsilon_reaches_every_signed_z_rule(monkeypatch, tiny_explainer, tiny_pixels):
    from attngrad.methods import relprop

    seen: list[tuple[str, float]] = []
    for name in ("residual_split", "matmul_relevance"):
        rule = getattr(relprop, name)
        monkeypatch.setattr(relprop, name, lambda *args, _rule=rule, _name=name, **kw: (
            seen.append((_name, kw.get("epsilon", 0.0))), _rule(*args, **kw))[1])
    tiny_explainer.explain_methods(tiny_pixels[:1], ["lrp"], options={"lrp": {"epsilon": 0.03}})
    layers = 3  # 2 residual splits and 2 products per block, the position-embedding split
    assert sorted(seen) == sorted([("residual_split", 0.03)] * (2 * layers + 1) + [("matmul_relevance", 0.03)] * (2 * layers))


def test_lrp_epsilon_option_is_checked_and_kept_apart_from_the_shared_pass(tiny_explainer, tiny_pixels):
    from attngrad.methods import get_method

    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(AttngradError, match="lrp: epsilon must be a number"):
            get_method("lrp", epsilon=bad)
    targets = [1, 3, 0]
    both = tiny_explainer.explain_methods(tiny_pixels, ["lrp", "tattr", "partial_lrp"], target=targets,
                                          options={"lrp": {"epsilon": 0.1}})
    plain = tiny_explainer.explain_methods(tiny_pixels, ["lrp", "tattr", "partial_lrp"], target=targets)
    alone = tiny_explainer.explain_methods(tiny_pixels, ["lrp"], target=targets, options={"lrp": {"epsilon": 0.1}})
    torch.testing.assert_close(both["lrp"].maps, alone["lrp"].maps)
    for name in ("tattr", "partial_lrp"):  # the epsilon is lrp's alone
        torch.testing.assert_close(both[name].maps, plain[name].maps)
    assert not torch.allclose(both["lrp"].maps, plain["lrp"].maps)


@pytest.mark.parametrize("epsilon", [0.0, 0.01])
def test_rules_leave_their_inputs_untouched(epsilon):
    """The rules divide into their own temporaries: the recorded activations, the weights and the incoming
    relevance (which other rules and the T-Attr rollout read again) come out unchanged."""
    torch.manual_seed(5)
    x, weight, bias = torch.randn(2, 3, 4), torch.randn(5, 4), torch.randn(5)
    output, relevance = x @ weight.T + bias, torch.randn(2, 3, 5)
    a, b, r = torch.randn(2, 3, 4), torch.randn(1, 3, 4).expand(2, 3, 4), torch.randn(2, 3, 4)
    inputs = [x, weight, bias, output, relevance, a, b, r]
    kept = [t.clone() for t in inputs]
    zplus_linear(x, weight, relevance, output, bias)
    zplus_linear(x, weight, relevance)
    residual_split(a, b, r, epsilon=epsilon)
    assert all(torch.equal(t, k) for t, k in zip(inputs, kept))
