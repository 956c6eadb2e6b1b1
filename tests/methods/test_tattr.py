"""T-Attr, LRP and partial LRP against a straightforward per-rule implementation written here.

The reference follows the authors' code (Chefer et al., CVPR 2021, ``layers_ours.py`` /
``ViT_LRP.py``): its own forward pass of the tiny ViT from the weights, for ONE image,
and every rule's relevance through autograd (the "gradprop" form ``x * d(Z)/d(x) . R / Z``)
rather than the closed forms of ``relprop.py``; the T-Attr map is the full matrix product
of the renormalised ``I + E_H(max(grad A * R_A, 0))`` over layers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attngrad import Explainer
from attngrad.errors import AttngradError
from attngrad.methods import METHODS

from ..conftest import MULTICLASS, TIMM_CKPT, needs_shared, tiny_vit_config


def sdiv(a, b):
    return a / (b + 1e-9) * (b != 0)


def gradprop(z, inputs, s):
    return torch.autograd.grad(z, inputs, s, retain_graph=True)


def ref_linear(x, w, r):
    xp = x.clamp(min=0).detach().requires_grad_(True)
    xn = x.clamp(max=0).detach().requires_grad_(True)
    z1, z2 = F.linear(xp, w.clamp(min=0)), F.linear(xn, w.clamp(max=0))
    s = sdiv(r, z1 + z2)
    return xp * gradprop(z1, xp, s)[0] + xn * gradprop(z2, xn, s)[0]


def ref_add(a, b, r):
    a, b = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
    ca, cb = gradprop(a + b, (a, b), sdiv(r, a + b))
    ra, rb = a * ca, b * cb
    sa, sb = ra.sum(), rb.sum()
    fa = sdiv(sa.abs(), sa.abs() + sb.abs()) * r.sum()
    fb = sdiv(sb.abs(), sa.abs() + sb.abs()) * r.sum()
    return (ra * sdiv(fa, sa)).detach(), (rb * sdiv(fb, sb)).detach()


def ref_einsum(eq, x, y, r):
    x, y = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
    z = torch.einsum(eq, x, y)
    cx, cy = gradprop(z, (x, y), sdiv(r, z))
    return (x * cx).detach() / 2, (y * cy).detach() / 2


def ref_zb_conv(x, conv, r):
    w = conv.weight.detach()
    lo = torch.full_like(x, x.min().item()).requires_grad_(True)
    hi = torch.full_like(x, x.max().item()).requires_grad_(True)
    x = x.detach().requires_grad_(True)
    za, zl, zh = (F.conv2d(t, wt, stride=conv.stride) for t, wt in ((x, w), (lo, w.clamp(min=0)), (hi, w.clamp(max=0))))
    s = r / (za - zl - zh + 1e-9)
    return x * gradprop(za, x, s)[0] - lo * gradprop(zl, lo, s)[0] - hi * gradprop(zh, hi, s)[0]


def reference(model, pixels, target):
    """One image (1, 3, H, W): (R_A per layer (H, N, N), grad A per layer, pixel relevance (1, 3, H, W))."""
    cfg, vit = model.config, model.vit
    heads, dh = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    ln = lambda x, m: F.layer_norm(x, (cfg.hidden_size,), m.weight, m.bias, cfg.layer_norm_eps)  # noqa: E731
    lin = lambda x, m: x @ m.weight.T + m.bias  # noqa: E731
    conv = vit.embeddings.patch_embeddings.projection
    emb_tokens = torch.cat([vit.embeddings.cls_token[0], F.conv2d(pixels, conv.weight, conv.bias, stride=conv.stride)
                            .flatten(2)[0].T])
    pos = vit.embeddings.position_embeddings[0]
    x = emb_tokens + pos
    saved, attns = [], []
    for layer in vit.layers:
        att, s = layer.attention, {"x": x}
        s["h1"] = ln(x, layer.layernorm_before)
        q, k, v = (lin(s["h1"], m).view(-1, heads, dh).transpose(0, 1) for m in (att.q_proj, att.k_proj, att.v_proj))
        # transformers takes the softmax in float32 whatever the model dtype; so does the reference
        a = torch.softmax(torch.einsum("hid,hjd->hij", q, k) / math.sqrt(dh), dim=-1, dtype=torch.float32).to(q.dtype)
        ctx = torch.einsum("hij,hjd->hid", a, v)
        s.update(q=q, k=k, v=v, a=a, ctx=ctx.transpose(0, 1).reshape(-1, cfg.hidden_size))
        s["attn_out"] = lin(s["ctx"], att.o_proj)
        x = s["mid"] = x + s["attn_out"]
        s["h2"] = ln(x, layer.layernorm_after)
        s["act"] = F.gelu(lin(s["h2"], layer.mlp.fc1))
        s["mlp_out"] = lin(s["act"], layer.mlp.fc2)
        x = x + s["mlp_out"]
        saved.append(s)
        attns.append(a)
    normed = ln(x, vit.layernorm)
    logits = lin(normed[0], model.classifier)
    grads = torch.autograd.grad(logits[target], attns, retain_graph=True)

    r = ref_linear(normed[0], model.classifier.weight, F.one_hot(torch.tensor(target), cfg.num_labels).double())
    normed = normed.detach().requires_grad_(True)  # the CLS selection; the final norm passes through
    rel = (normed * gradprop(normed[0], normed, sdiv(r, normed[0]))[0]).detach()
    r_attn = [None] * len(saved)
    for i in reversed(range(len(saved))):
        s, layer = saved[i], vit.layers[i]
        r_mid, r_mlp = ref_add(s["mid"], s["mlp_out"], rel)
        r_h2 = ref_linear(s["h2"], layer.mlp.fc1.weight, ref_linear(s["act"], layer.mlp.fc2.weight, r_mlp))
        r_x, r_o = ref_add(s["x"], s["attn_out"], r_mid + r_h2)
        r_ctx = ref_linear(s["ctx"], layer.attention.o_proj.weight, r_o).view(-1, heads, dh).transpose(0, 1)
        r_a, r_v = ref_einsum("hij,hjd->hid", s["a"], s["v"], r_ctx)
        r_attn[i] = r_a
        r_q, r_k = ref_einsum("hid,hjd->hij", s["q"], s["k"], r_a)
        r_qkv = torch.cat([t.transpose(0, 1).reshape(-1, cfg.hidden_size) for t in (r_q, r_k, r_v)], dim=-1)
        w_qkv = torch.cat([m.weight for m in (layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj)])
        rel = (r_x + ref_linear(s["h1"], w_qkv, r_qkv)).detach()
    r_tokens, _ = ref_add(emb_tokens, pos, rel)
    gh = pixels.shape[-2] // conv.stride[0]
    r_patches = r_tokens[1:].T.reshape(1, -1, gh, pixels.shape[-1] // conv.stride[1])
    return r_attn, grads, ref_zb_conv(pixels, conv, r_patches).detach()


def ref_tattr(r_attn, grads, start_layer=0):
    n = r_attn[0].shape[-1]
    joint = None
    for r, g in zip(r_attn[start_layer:], grads[start_layer:]):  # layer l's relevance with layer l's gradient
        m = torch.eye(n, dtype=r.dtype) + (g * r).clamp(min=0).mean(dim=0)
        m = m / m.sum(dim=-1, keepdim=True)
        joint = m if joint is None else m @ joint
    return joint[0, 1:]


@pytest.fixture(scope="module")
def tiny2():
    """A 2-layer random ViT in float64 (weights scaled up so activations are not all tiny)."""
    from transformers import ViTForImageClassification

    torch.manual_seed(4)
    return ViTForImageClassification(tiny_vit_config(num_hidden_layers=2, initializer_range=0.3)).double().eval()


def test_matches_reference_per_rule_implementation_batched(tiny2):
    torch.manual_seed(5)
    pixels = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    targets = [1, 3, 0]
    res = Explainer(tiny2).explain_methods(pixels, ["tattr", "lrp", "partial_lrp"], target=targets)
    for i, t in enumerate(targets):
        r_attn, grads, r_pix = reference(tiny2, pixels[i : i + 1], t)
        torch.testing.assert_close(res["tattr"].maps[i].flatten(), ref_tattr(r_attn, grads), rtol=1e-7, atol=1e-10)
        partial = r_attn[-1].clamp(min=0).mean(dim=0)[0, 1:]
        torch.testing.assert_close(res["partial_lrp"].maps[i].flatten(), partial, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(res["lrp"].maps[i], r_pix[0].sum(dim=0), rtol=1e-7, atol=1e-10)
    # the reference is not degenerate: maps vary, lrp has both signs
    assert res["tattr"].maps.std() > 0 and (res["lrp"].maps < 0).any() and (res["lrp"].maps > 0).any()
    assert res["lrp"].maps.shape == (3, 32, 32) and res["tattr"].maps.shape == (3, 4, 4)


def test_tattr_start_layer_matches_reference(tiny2):
    """A non-zero start layer drops the first layers of the product and pairs each remaining layer's
    relevance with that same layer's gradient (a shifted pairing fails here)."""
    torch.manual_seed(7)
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    res = Explainer(tiny2).explain(pixels, method="tattr", target=[1, 3], start_layer=1)
    for i, t in enumerate([1, 3]):
        r_attn, grads, _ = reference(tiny2, pixels[i : i + 1], t)
        expected = ref_tattr(r_attn, grads, start_layer=1)
        torch.testing.assert_close(res.maps[i].flatten(), expected, rtol=1e-7, atol=1e-10)
        assert not torch.allclose(expected, ref_tattr(r_attn, grads)), "start_layer must change the map here"


def test_relevance_at_attention_matches_reference(tiny2):
    from attngrad.methods import get_method

    torch.manual_seed(6)
    pixels = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    ex = Explainer(tiny2)
    method = get_method("lrp")
    trace = ex.trace(pixels, target=2, methods=[method])
    rel = method.relevance(trace)
    r_attn, _, _ = reference(tiny2, pixels, 2)
    for ours, ref in zip(rel.attention, r_attn):
        torch.testing.assert_close(ours[0], ref, rtol=1e-7, atol=1e-12)


def test_batch_equals_single_images(tiny_explainer, tiny_pixels):
    methods = ["tattr", "lrp", "partial_lrp"]
    batch = tiny_explainer.explain_methods(tiny_pixels, methods, target=[0, 2, 4])
    for i, t in enumerate([0, 2, 4]):
        alone = tiny_explainer.explain_methods(tiny_pixels[i : i + 1], methods, target=t)
        for m in methods:
            torch.testing.assert_close(batch[m].maps[i], alone[m].maps[0], rtol=1e-4, atol=1e-7)


def _totals(explainer, pixels, target):
    from attngrad.methods import get_method

    method = get_method("lrp")
    return method.relevance(explainer.trace(pixels, target=target, methods=[method])).totals


def test_conservation_at_every_layer_boundary(tiny_explainer, tiny_pixels):
    totals = _totals(tiny_explainer, tiny_pixels, "top1")
    blocks = [k for k in totals if k.startswith("block")]
    assert len(blocks) == 3 * 3  # output, mid, input of each of 3 layers
    for name in ["logits", "head_input", *blocks]:
        torch.testing.assert_close(totals[name], torch.ones(3), rtol=1e-3, atol=0, msg=name)
    # below the blocks the position embeddings and the CLS token take their share (not passed on);
    # the z^B rule conserves what reaches the patches
    assert (totals["embedding.tokens"] < 1.0 + 1e-3).all()
    torch.testing.assert_close(totals["pixels"], totals["embedding.patches"], rtol=1e-3, atol=0)


def test_tattr_nonnegative_and_registered(tiny_explainer, tiny_pixels):
    assert {"tattr", "lrp", "partial_lrp"} <= set(METHODS)
    res = tiny_explainer.explain(tiny_pixels, method="tattr", start_layer=1)
    assert (res.maps >= 0).all() and res.maps.shape == (3, 4, 4)


def test_unsupported_model_gives_clear_error(tiny_pixels):
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=5,
                              global_pool="avg")
    with pytest.raises(AttngradError, match="supported"):
        Explainer(model).explain(tiny_pixels, method="tattr")


def test_timm_vit_gives_the_same_maps_as_the_same_weights_in_hugging_face(tiny_pixels):
    """timm and Hugging Face layouts are walked alike: copy one tiny ViT's weights into the other."""
    timm = pytest.importorskip("timm")
    from transformers import ViTForImageClassification

    torch.manual_seed(7)
    tm = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                           mlp_ratio=2, num_classes=5, qkv_bias=True).eval()
    hf = ViTForImageClassification(tiny_vit_config(num_hidden_layers=2)).eval()
    sd = {"vit.embeddings.cls_token": tm.cls_token, "vit.embeddings.position_embeddings": tm.pos_embed,
          "vit.embeddings.patch_embeddings.projection.weight": tm.patch_embed.proj.weight,
          "vit.embeddings.patch_embeddings.projection.bias": tm.patch_embed.proj.bias,
          "vit.layernorm.weight": tm.norm.weight, "vit.layernorm.bias": tm.norm.bias,
          "classifier.weight": tm.head.weight, "classifier.bias": tm.head.bias}
    for i, blk in enumerate(tm.blocks):
        p = f"vit.layers.{i}."
        for name, part in zip("qkv", blk.attn.qkv.weight.chunk(3)):
            sd[p + f"attention.{name}_proj.weight"] = part
        for name, part in zip("qkv", blk.attn.qkv.bias.chunk(3)):
            sd[p + f"attention.{name}_proj.bias"] = part
        for ours, theirs in (("attention.o_proj", blk.attn.proj), ("layernorm_before", blk.norm1),
                             ("layernorm_after", blk.norm2), ("mlp.fc1", blk.mlp.fc1), ("mlp.fc2", blk.mlp.fc2)):
            sd[p + ours + ".weight"], sd[p + ours + ".bias"] = theirs.weight, theirs.bias
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()})
    methods = ["tattr", "lrp", "partial_lrp"]
    from_timm = Explainer(tm).explain_methods(tiny_pixels, methods, target=1)
    from_hf = Explainer(hf).explain_methods(tiny_pixels, methods, target=1)
    torch.testing.assert_close(from_timm["tattr"].logits, from_hf["tattr"].logits, rtol=1e-4, atol=1e-5)
    for m in methods:
        torch.testing.assert_close(from_timm[m].maps, from_hf[m].maps, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_shipped_vit_tattr_finds_the_zebra(vit_ti):
    """el1: zebra on the left, elephant right. T-Attr for zebra puts most mass in the left third."""
    res = vit_ti.explain_methods(["el1"] * 2, ["tattr", "lrp"], target=["zebra", "African elephant"])
    maps = res["tattr"].maps
    assert (maps >= 0).all()
    left = maps[:, :, : maps.shape[-1] // 3].sum(dim=(1, 2)) / maps.sum(dim=(1, 2))
    assert left[0] > 0.5, f"zebra's share of the left third: {left[0]:.3f}"
    assert left[1] < 0.25, f"elephant's share of the left third: {left[1]:.3f}"
    assert res["lrp"].maps.shape == (2, 224, 224)
    totals = _totals(vit_ti, vit_ti.prepare("el1")[0], "zebra")
    for name in [k for k in totals if k.startswith("block")]:
        torch.testing.assert_close(totals[name], torch.ones(1), rtol=1e-3, atol=0, msg=name)


@pytest.mark.slow
@needs_shared
def test_real_timm_vit_ti_matches_hugging_face_copy(vit_ti):
    """The shared timm checkpoint of the shipped ViT-Ti: same input, same T-Attr / LRP maps."""
    pytest.importorskip("timm")
    timm_ex = Explainer.from_timm("vit_tiny_patch16_224", TIMM_CKPT)
    pixels, _ = vit_ti.prepare([MULTICLASS / "el1.jpg", MULTICLASS / "catdog.png"])
    methods = ["tattr", "lrp", "partial_lrp"]
    ours = timm_ex.explain_methods(pixels, methods, target=["zebra", "tiger cat"])
    ref = vit_ti.explain_methods(pixels, methods, target=["zebra", "tiger cat"])
    for m in methods:
        peak = ref[m].maps.abs().amax()
        torch.testing.assert_close(ours[m].maps, ref[m].maps, rtol=0, atol=1e-4 * peak.item(), msg=m)


@pytest.mark.parametrize("start_layer", [3, 7, -1])
def test_tattr_refuses_a_start_layer_outside_the_model(tiny_explainer, tiny_pixels, start_layer):
    """A 3-layer model: start_layer must be 0..2, named in the error (-1 would silently propagate to
    the pixels and roll out the last layer only)."""
    with pytest.raises(AttngradError, match=rf"tattr: start_layer {start_layer} is out of range; this model has layers 0\.\.2"):
        tiny_explainer.explain(tiny_pixels[:1], method="tattr", start_layer=start_layer)
