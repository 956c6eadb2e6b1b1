"""TAM, BI-H and BI-token against an independent computation from rivals.md's equations.

The test writes its own forward pass of the tiny ViT from the model's weights for ONE
image (embeddings, pre-norm blocks, per-head softmax attention, MLP, classifier), keeps
every block's input ``z_l`` and attention ``A(l)``, takes gradients with autograd, runs the
K integration steps one pass at a time, and forms the products by explicit loops over
layers, heads and steps (rivals.md sections 0-3; the authors' ``generate_transition_attention_maps``,
``generate_ours`` and ``generate_ours_c``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attngrad import Explainer
from attngrad.errors import AttngradError
from attngrad.methods import METHODS, get_method

from ..conftest import TIMM_CKPT, needs_shared

STEPS = 5


def make(name, **options):
    """The method with these options (its constructor; get_method passes options on too once merged)."""
    return METHODS[name](**options)


def ref_forward(model, pixels, keep=None, outputs=None, norms=None, override=None):
    """One image (1, 3, H, W) -> logits (C,), attentions [(H, N, N)], block inputs [(N, D)], value updates [(N, D)].

    ``keep``: patch indices whose tokens (with CLS) alone enter the blocks; ``outputs``: a list
    that receives every block's output; ``override``: {layer: (H, N, N)} maps used in place of
    those layers' softmax (DIX)."""
    cfg, vit = model.config, model.vit
    heads, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    ln = lambda x, m: F.layer_norm(x, (cfg.hidden_size,), m.weight, m.bias, cfg.layer_norm_eps)  # noqa: E731
    conv = vit.embeddings.patch_embeddings.projection
    x = F.conv2d(pixels, conv.weight, conv.bias, stride=cfg.patch_size).flatten(2)[0].T
    x = torch.cat([vit.embeddings.cls_token[0], x]) + vit.embeddings.position_embeddings[0]
    if keep is not None:
        x = torch.stack([x[0]] + [x[1 + int(j)] for j in keep])
    attns, inputs, updates = [], [], []
    for layer in vit.layers:
        att = layer.attention
        inputs.append(x)
        h = ln(x, layer.layernorm_before)
        if norms is not None:
            norms.append(h)
        q, k, v = ((h @ m.weight.T + m.bias).view(-1, heads, d) for m in (att.q_proj, att.k_proj, att.v_proj))
        a = torch.stack([torch.softmax(q[:, i] @ k[:, i].T / math.sqrt(d), dim=-1) for i in range(heads)])
        if override is not None and len(attns) in override:
            a = override[len(attns)]
        attns.append(a)
        updates.append(v.reshape(-1, cfg.hidden_size) @ att.o_proj.weight.T)  # get_vproj: no output bias
        ctx = torch.cat([a[i] @ v[:, i] for i in range(heads)], dim=-1)
        x = x + ctx @ att.o_proj.weight.T + att.o_proj.bias
        h = F.gelu(ln(x, layer.layernorm_after) @ layer.mlp.fc1.weight.T + layer.mlp.fc1.bias)
        x = x + h @ layer.mlp.fc2.weight.T + layer.mlp.fc2.bias
        if outputs is not None:
            outputs.append(x)
    logits = ln(x, vit.layernorm)[0] @ model.classifier.weight.T + model.classifier.bias
    return logits, attns, inputs, updates


def ref_integrated(model, pixels, target, steps):
    """W (N, N): mean over heads of max(mean over k of grad A(L-1)(alpha_k x), 0), alpha_k = k/(K-1)."""
    total = 0
    for k in range(steps):
        logits, attns, _, _ = ref_forward(model, pixels * (k / (steps - 1)))
        total = total + torch.autograd.grad(logits[target], attns[-1])[0]
    gbar = total / steps
    heads = gbar.shape[0]
    return sum(gbar[h].clamp(min=0) for h in range(heads)) / heads


def ref_tam(model, pixels, target, start_layer, steps):
    with torch.no_grad():
        _, attns, _, _ = ref_forward(model, pixels)
    means = [a.mean(dim=0) for a in attns]
    s = means[-1][0]
    for layer in range(len(means) - 2, start_layer - 1, -1):
        s = s @ means[layer] + s
    return s[1:] * ref_integrated(model, pixels, target, steps)[0, 1:]


def ref_bi_head(model, pixels, target, start_layer, steps):
    """start_layer counted from 0 (the authors' start_layer - 1)."""
    logits, attns, _, _ = ref_forward(model, pixels)
    grads = torch.autograd.grad(logits[target], attns)
    n = attns[0].shape[-1]
    r = torch.eye(n)
    for layer in range(start_layer, len(attns)):
        a, g = attns[layer].detach(), grads[layer]
        importance = torch.stack([(a[h].T @ g[h]).abs().mean() for h in range(a.shape[0])])
        w = importance / importance.sum()
        mix = sum(w[h] * a[h] for h in range(a.shape[0]))
        r = r + mix @ r
    weight = ref_integrated(model, pixels, target, steps)
    return (weight * r)[0, 1:]


def ref_bi_token(model, pixels, target, start_layer, steps):
    with torch.no_grad():
        _, attns, inputs, updates = ref_forward(model, pixels)
    n = attns[0].shape[-1]
    r = torch.eye(n)
    for layer in range(start_layer, len(attns)):
        o = torch.tensor([updates[layer][i].norm() / inputs[layer][i].norm() for i in range(n)])
        r = r + attns[layer].mean(dim=0) @ torch.diag(o) @ r
    weight = ref_integrated(model, pixels, target, steps)
    return weight[0, 1:] * r[0, 1:].abs()


REFERENCES = {"tam": ref_tam, "bi": ref_bi_head, "bi_token": ref_bi_token}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("start_layer", [0, 2])
def test_matches_the_equations(tiny_vit, tiny_explainer, tiny_pixels, name, start_layer):
    targets = [1, 3, 0]
    res = tiny_explainer.explain(tiny_pixels, target=targets, method=make(name, start_layer=start_layer,
                                                                              steps=STEPS, batch_size=4))
    assert res.maps.shape == (3, 4, 4)
    for b, t in enumerate(targets):
        expected = REFERENCES[name](tiny_vit, tiny_pixels[b : b + 1], t, start_layer, STEPS)
        scale = expected.abs().max()
        assert scale > 0
        torch.testing.assert_close(res.maps[b].flatten(), expected.detach(), rtol=0, atol=1e-5 * scale.item())


@pytest.mark.parametrize("name", ["tam", "bi", "bi_token"])
def test_batched_equals_one_by_one(tiny_explainer, tiny_pixels, name):
    """Images of a batch do not interact (the authors' BI-token averages over the batch)."""
    method = make(name, start_layer=0, steps=STEPS, batch_size=7)  # chunks straddle images
    together = tiny_explainer.explain(tiny_pixels, target=[1, 3, 0], method=method).maps
    for b, t in enumerate([1, 3, 0]):
        alone = tiny_explainer.explain(tiny_pixels[b : b + 1], target=t, method=method).maps[0]
        torch.testing.assert_close(together[b], alone, rtol=1e-5, atol=1e-7)


def test_defaults_are_the_authors(tiny_explainer, tiny_pixels):
    """TAM 4 (0-based, as its authors count); BI 4 and BI-token 7 in BI's 1-based count = 3 and 6 here;
    on a model with fewer blocks the default becomes the last block; a given start layer is checked."""
    assert [METHODS[n].default_start for n in ("tam", "bi", "bi_token")] == [4, 3, 6]
    assert all(get_method(n).steps == 20 and get_method(n).start_layer is None for n in ("tam", "bi", "bi_token"))
    for name in ("tam", "bi", "bi_token"):
        cls = METHODS[name]
        assert cls.signed is False and cls.description and cls.__doc__
        default = tiny_explainer.explain(tiny_pixels[:1], target=1, method=make(name, steps=STEPS)).maps
        last = tiny_explainer.explain(tiny_pixels[:1], target=1, method=make(name, steps=STEPS, start_layer=2)).maps
        torch.testing.assert_close(default, last)
    with pytest.raises(AttngradError, match="start_layer 4 is out of range"):
        tiny_explainer.explain(tiny_pixels[:1], method=make("tam", start_layer=4))  # a 3-layer model
    with pytest.raises(AttngradError, match="start_layer -1 is out of range"):
        tiny_explainer.explain(tiny_pixels[:1], method=make("bi_token", start_layer=-1))


def test_bad_options_are_refused():
    with pytest.raises(AttngradError, match="steps"):
        make("tam", steps=0)
    with pytest.raises(AttngradError, match="batch_size"):
        make("bi", batch_size=0)


def test_bi_token_without_recorded_inputs(tiny_explainer, tiny_pixels):
    """A trace made without BI-token's capture context costs one more forward, same map."""
    method = make("bi_token", start_layer=1, steps=STEPS)
    shared = tiny_explainer.trace(tiny_pixels, target=2, methods=[method])
    bare = tiny_explainer.trace(tiny_pixels, target=2, methods=[get_method("complete")])
    torch.testing.assert_close(method(bare), method(shared))


def _timm_copy_of_hf(hf):
    """A timm ViT with the Hugging Face tiny ViT's weights."""
    timm = pytest.importorskip("timm")
    cfg = hf.config
    tm = timm.create_model("vit_tiny_patch16_224", img_size=cfg.image_size, patch_size=cfg.patch_size,
                           embed_dim=cfg.hidden_size, depth=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
                           mlp_ratio=cfg.intermediate_size / cfg.hidden_size, num_classes=cfg.num_labels,
                           qkv_bias=True).eval()
    vit = hf.vit
    sd = {"cls_token": vit.embeddings.cls_token, "pos_embed": vit.embeddings.position_embeddings,
          "patch_embed.proj.weight": vit.embeddings.patch_embeddings.projection.weight,
          "patch_embed.proj.bias": vit.embeddings.patch_embeddings.projection.bias,
          "norm.weight": vit.layernorm.weight, "norm.bias": vit.layernorm.bias,
          "head.weight": hf.classifier.weight, "head.bias": hf.classifier.bias}
    for i, layer in enumerate(vit.layers):
        att, p = layer.attention, f"blocks.{i}."
        sd[p + "attn.qkv.weight"] = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])
        sd[p + "attn.qkv.bias"] = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias])
        for theirs, ours in (("attn.proj", att.o_proj), ("norm1", layer.layernorm_before),
                             ("norm2", layer.layernorm_after), ("mlp.fc1", layer.mlp.fc1), ("mlp.fc2", layer.mlp.fc2)):
            sd[p + theirs + ".weight"], sd[p + theirs + ".bias"] = ours.weight, ours.bias
    tm.load_state_dict({k: v.detach().clone() for k, v in sd.items()})
    return tm


def test_timm_gives_the_same_maps_as_hugging_face(tiny_vit, tiny_explainer, tiny_pixels):
    tm = _timm_copy_of_hf(tiny_vit)
    methods = [make(n, start_layer=1, steps=STEPS) for n in ("tam", "bi", "bi_token")] + [make("tis", n_masks=6),
                                                                                  make("vitcx", distance_threshold=0.2)]
    from_timm = Explainer(tm).explain_methods(tiny_pixels, methods, target=[1, 3, 0])
    from_hf = tiny_explainer.explain_methods(tiny_pixels, methods, target=[1, 3, 0])
    for name in ("tam", "bi", "bi_token", "tis", "vitcx"):
        scale = from_hf[name].maps.abs().max().item()
        torch.testing.assert_close(from_timm[name].maps, from_hf[name].maps, rtol=0, atol=1e-5 * scale)


@needs_shared
@pytest.mark.slow
def test_shipped_vit_ti_sizes_and_timm_copy(vit_ti):
    """rivals.md: on el1, TAM maxima about 1.6-3.2, BI-H 6-12, BI-T 0.3-0.5; the timm checkpoint agrees."""
    from attngrad.demo import asset_image

    pixels, _ = vit_ti.prepare([asset_image("el1.jpg")] * 2)
    names = ["tam", "bi", "bi_token"]
    ours = vit_ti.explain_methods(pixels, names, target=["zebra", "African elephant"])
    peaks = {n: ours[n].maps.flatten(1).amax(dim=1) for n in names}
    assert ((peaks["tam"] > 1.0) & (peaks["tam"] < 4.0)).all(), peaks
    assert ((peaks["bi"] > 4.0) & (peaks["bi"] < 15.0)).all(), peaks
    assert ((peaks["bi_token"] > 0.2) & (peaks["bi_token"] < 0.7)).all(), peaks
    pytest.importorskip("timm")
    timm_ex = Explainer.from_timm("vit_tiny_patch16_224", TIMM_CKPT)
    theirs = timm_ex.explain_methods(pixels, names, target=["zebra", "African elephant"])
    for n in names:
        torch.testing.assert_close(theirs[n].maps, ours[n].maps, rtol=0, atol=1e-3 * peaks[n].max().item())


def ref_kmeans(points, k, seed, max_iter=100, tol=1e-4):
    """Lloyd's k-means on the rows of ``points`` (n, P), one point at a time; initial centroids the
    rows ``randint(0, n, (k,))`` of a generator seeded ``seed``; an empty cluster's centroid is 0."""
    n = points.shape[0]
    centroids = points[torch.randint(0, n, (k,), generator=torch.Generator().manual_seed(seed))].clone()
    for _ in range(max_iter):
        members = [[] for _ in range(k)]
        for i in range(n):
            members[int(((points[i] - centroids) ** 2).sum(dim=1).argmin())].append(points[i])
        moved = torch.stack([torch.stack(m).mean(dim=0) if m else torch.zeros_like(points[0]) for m in members])
        shift = float(((moved - centroids) ** 2).sum())
        centroids = moved
        if shift <= tol:
            break
    return centroids


def ref_tis(model, pixels, target, n_masks, ratio, seed):
    with torch.no_grad():
        outputs = []
        ref_forward(model, pixels, outputs=outputs)
        points = torch.cat(outputs, dim=-1)[1:].T  # (L*D, P)
        centroids = ref_kmeans(points, n_masks, seed)
        patches = points.shape[1]
        total, coverage = torch.zeros(patches), torch.zeros(patches)
        for c in centroids:
            keep = torch.topk(c, int(ratio * patches)).indices.tolist()  # the authors' mask choice, ties included
            prob = torch.softmax(ref_forward(model, pixels, keep=keep)[0], dim=0)[target]
            for j in keep:
                total[j] += prob
                coverage[j] += 1
        return total / coverage


def test_tis_matches_the_equations(tiny_vit, tiny_explainer, tiny_pixels):
    method = make("tis", n_masks=6, tokens_ratio=0.5, batch_size=5, seed=3)
    res = tiny_explainer.explain(tiny_pixels, target=[1, 3, 0], method=method)
    for b, t in enumerate([1, 3, 0]):
        expected = ref_tis(tiny_vit, tiny_pixels[b : b + 1], t, 6, 0.5, 3)
        torch.testing.assert_close(res.maps[b].flatten(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, options", [("tis", dict(n_masks=6, batch_size=5)),
                                           ("vitcx", dict(distance_threshold=0.2, batch_size=7))])
def test_seeded_batched_equals_one_by_one(tiny_explainer, tiny_pixels, name, options):
    together = tiny_explainer.explain(tiny_pixels, target=[1, 3, 0], method=make(name, seed=5, **options)).maps
    again = tiny_explainer.explain(tiny_pixels, target=[1, 3, 0], method=make(name, seed=5, **options)).maps
    assert torch.equal(together, again)
    for b, t in enumerate([1, 3, 0]):
        alone = tiny_explainer.explain(tiny_pixels[b : b + 1], target=t, method=make(name, seed=5, **options)).maps[0]
        torch.testing.assert_close(together[b], alone, rtol=1e-5, atol=1e-7)
    other = tiny_explainer.explain(tiny_pixels, target=[1, 3, 0], method=make(name, seed=6, **options)).maps
    assert not torch.equal(together, other)


def ref_vitcx(model, pixels, target, threshold, noise, seed):
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    with torch.no_grad():
        norms = []
        clean = torch.softmax(ref_forward(model, pixels, norms=norms)[0], dim=0)[target]
        size, patch = pixels.shape[-1], model.config.patch_size
        g = size // patch
        feats = norms[-1][1:].T.reshape(-1, 1, g, g)  # (D, 1, g, g)
        maps = []
        for f in feats:
            up = F.interpolate(f[None], size=(size, size), mode="bilinear", align_corners=False)[0, 0].flatten()
            maps.append((up - up.min()) / (up.max() - up.min()))
        d = len(maps)
        dist = torch.zeros(d, d, dtype=torch.float64)
        for i in range(d):
            for j in range(d):
                if i != j:
                    dist[i, j] = 1 - float(maps[i] @ maps[j] / (maps[i].norm() * maps[j].norm()))
        labels = fcluster(linkage(squareform(dist.numpy()), "complete"), t=threshold, criterion="distance")
        groups = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        masks = []
        for members in sorted(groups.values(), key=min):
            m = sum(maps[i] for i in members)
            masks.append(((m - m.min()) / (m.max() - m.min())).view(1, size, size))
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(size * size)
        cover = sum(masks).flatten()
        for m in masks:
            n = noise * torch.randn(pixels.shape[1:], generator=gen) * (1 - m)
            p_mask = torch.softmax(ref_forward(model, (pixels[0] * m + n)[None])[0], dim=0)[target]
            p_noise = torch.softmax(ref_forward(model, (pixels[0] + n)[None])[0], dim=0)[target]
            total += torch.where(cover > 0, (p_mask - p_noise + clean) * m.flatten() / cover, 0.0)
        pixel = (total / len(masks)).view(g, patch, g, patch)
        return pixel.mean(dim=(1, 3)), len(masks)


def test_vitcx_matches_the_equations(tiny_vit, tiny_explainer, tiny_pixels):
    method = make("vitcx", distance_threshold=0.2, batch_size=7, seed=2)
    res = tiny_explainer.explain(tiny_pixels, target=[1, 3, 0], method=method)
    for b, t in enumerate([1, 3, 0]):
        expected, clusters = ref_vitcx(tiny_vit, tiny_pixels[b : b + 1], t, 0.2, 0.1, 2)
        assert 1 < clusters < 32
        torch.testing.assert_close(res.maps[b], expected, rtol=1e-4, atol=1e-6)
