"""Qwen2-VL in VLMExplainer against loops written from the equations, on a tiny random Qwen2-VL.

The reference builds the processor's flattened patches with the real ``Qwen2VLImageProcessor``,
runs the vision blocks by hand (its attention written out: softmax(q k^T / sqrt(d)) with the
model's rotary embedding), checks that this gives the model's own image features, places them
in the embeddings, runs the language model with the 3-D positions of ``get_rope_index`` and
forms the rollouts with explicit loops over layers and heads: nothing of attngrad's code is used.
The generic tests of test_vlm.py (batched = alone, left padding, one pass for every method,
generation, contrast, refusals) run on this model too (the ``qwen2vl`` case of its fixture).
"""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError

from .conftest import IMAGE, TEMPLATE, tiny_qwen2vl

SIDE, PATCH, MERGE = 8, 2, 2  # 16 px image: 8 x 8 patches of 2 px, merged 2 x 2 into 4 x 4 image tokens


@pytest.fixture(scope="module")
def ex(tokenizer):
    from attngrad.vlm import VLMAdapter, VLMExplainer

    return VLMExplainer(VLMAdapter(tiny_qwen2vl(), tokenizer, template=TEMPLATE), batch_size=2)


def _processor(pixels):
    from transformers import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2, do_resize=False,
                                 do_rescale=False, do_normalize=False)
    out = proc(images=list(pixels), return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def _block_order():
    """order[r, c]: the vision token of patch (r, c): merge blocks in reading order, then inside each block."""
    order = torch.zeros(SIDE, SIDE, dtype=torch.long)
    t = 0
    for br in range(SIDE // MERGE):
        for bc in range(SIDE // MERGE):
            for mr in range(MERGE):
                for mc in range(MERGE):
                    order[br * MERGE + mr, bc * MERGE + mc] = t
                    t += 1
    return order


def _vision_by_hand(model, flat, grid):
    """The vision tower written out; returns the merged image features and every block's maps (1, H, M, M)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision
    from transformers.vision_utils import get_vision_position_ids

    visual = model.model.visual
    x = visual.patch_embed(flat)
    cos, sin = visual.rotary_pos_emb(x, get_vision_position_ids(grid, MERGE))
    maps = []
    for blk in visual.blocks:
        attn = blk.attn
        m = x.shape[0]
        q, k, v = attn.qkv(blk.norm1(x)).reshape(m, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (H, M, d)
        a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)[None]  # (1, H, M, M), used as is
        maps.append(a)
        x = x + attn.proj((a[0] @ v).transpose(0, 1).reshape(m, -1))
        x = x + blk.mlp(blk.norm2(x))
    return visual.merger(x), maps


def _weight(method, attn, grad):
    if method == "complete":
        return grad * attn
    if method == "rollout":
        return attn
    if method == "gae":
        return (grad * attn).clamp(min=0)
    return grad.abs() * attn


def _product(maps, grads, method):
    n = maps[0].shape[-1]
    r = torch.eye(n, dtype=torch.float64)
    for attn, grad in zip(maps, grads):
        heads = attn.shape[1]
        m = torch.zeros(n, n, dtype=torch.float64)
        for h in range(heads):
            m += _weight(method, attn[0, h], grad[0, h]).double() / heads
        abar = torch.eye(n, dtype=torch.float64) + m
        if method == "rollout":
            abar = abar / abar.sum(dim=1, keepdim=True)
        r = abar @ r
    return r


def _reference(model, tokenizer, pixels, prompt, method, reading, target):
    before, after = TEMPLATE.split("<image>")
    k = (SIDE // MERGE) ** 2
    head = tokenizer(before.format(prompt=prompt), add_special_tokens=True)["input_ids"]
    tail = tokenizer(after.format(prompt=prompt), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + [IMAGE] * k + tail])
    flat, grid = _processor(pixels)
    img, vmaps = _vision_by_hand(model, flat, grid)
    with torch.no_grad():
        own = model.model.get_image_features(flat, grid).pooler_output[0]
    assert torch.allclose(img, own, atol=1e-5 * float(own.abs().max()))  # the hand-written tower is the model's
    emb = model.get_input_embeddings()(ids).clone()
    emb[0, len(head):len(head) + k] = img
    positions, _ = model.model.get_rope_index(ids, (ids == IMAGE).int(), grid)
    out = model.model.language_model(inputs_embeds=emb, position_ids=positions, output_attentions=True)
    tmaps = list(out.attentions)
    logit = model.lm_head(out.last_hidden_state)[0, -1, target]
    grads = torch.autograd.grad(logit, tmaps + vmaps, allow_unused=True)
    grads = [torch.zeros_like(m) if g is None else g for m, g in zip(tmaps + vmaps, grads)]
    nt = len(tmaps)
    row = _product(tmaps, grads[:nt], method)[-1].clone()
    if method != "rollout":
        row[-1] -= 1.0
    image = row[len(head):len(head) + k]
    text = row.clone()
    text[len(head):len(head) + k] = 0
    if reading == "language":
        return image.reshape(SIDE // MERGE, SIDE // MERGE).float().detach(), text.float().detach()
    rv = _product(vmaps, grads[nt:], method)
    tokens = torch.zeros(rv.shape[0], dtype=torch.float64)
    for j in range(k):  # image token j is vision tokens 4j .. 4j+3, each given a quarter of its relevance
        for t in range(MERGE * MERGE * j, MERGE * MERGE * (j + 1)):
            tokens += image[j] / MERGE ** 2 * rv[t]
    patches = tokens[_block_order()]
    return patches.float().detach(), text.float().detach()


def test_patches_match_the_processor():
    from attngrad.vlm.model import qwen2vl_patches

    pixels = torch.randn(2, 3, 16, 16)
    flat, grid = qwen2vl_patches(pixels, patch=PATCH, merge=MERGE, temporal=2)
    want, want_grid = _processor(pixels)
    assert torch.equal(grid, want_grid) and torch.equal(flat, want)
    # and by the formula: vision token order[r, c] holds patch (r, c), channels x time x rows x columns
    order = _block_order()
    r, c = 5, 2
    patch = pixels[1, :, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]
    assert torch.equal(flat[SIDE * SIDE + order[r, c]], patch[:, None].expand(-1, 2, -1, -1).reshape(-1))


@pytest.mark.parametrize("method", ["complete", "gae", "absolute", "rollout"])
@pytest.mark.parametrize("reading", ["language", "vision"])
def test_matches_loops(ex, tokenizer, method, reading):
    torch.manual_seed(3)
    pixels = torch.randn(1, 3, 16, 16)
    res = ex.explain(pixels, "what is in this photo", method=method, reading=reading, target=5)
    maps, text = _reference(ex.adapter.model, tokenizer, pixels, "what is in this photo", method, reading, 5)
    scale = maps.abs().max()
    assert scale > 0
    assert torch.allclose(res.maps[0], maps, atol=1e-5 * float(scale)), (res.maps[0], maps)
    n = res.lengths[0]
    assert torch.allclose(res.text_scores[0, -n:], text, atol=max(1e-5 * float(text.abs().max()), 1e-6))
    if reading == "vision":  # the vision rollout matters on this model: (b) is far from (a) spread over the blocks
        spread = ex.explain(pixels, "what is in this photo", method=method, target=5).maps[0]
        spread = spread.repeat_interleave(MERGE, 0).repeat_interleave(MERGE, 1) / MERGE ** 2
        assert (res.maps[0] - spread).abs().max() > 0.05 * scale


def test_grad_x_input(ex, tokenizer):
    model = ex.adapter.model
    torch.manual_seed(5)
    pixels = torch.randn(1, 3, 16, 16)
    ids = torch.tensor([tokenizer("user")["input_ids"] + [IMAGE] * 16 + tokenizer("animal answer")["input_ids"]])
    kinds = (ids == IMAGE).int()
    # (a): the language model's input embeddings times their gradient, at the image tokens
    flat, grid = _processor(pixels)
    emb = model.get_input_embeddings()(ids).detach().clone()
    emb[0, 1:17] = model.model.get_image_features(flat, grid).pooler_output[0].detach()
    emb.requires_grad_(True)
    positions, _ = model.model.get_rope_index(ids, kinds, grid)
    logit = model.lm_head(model.model.language_model(inputs_embeds=emb, position_ids=positions).last_hidden_state)[0, -1, 6]
    (g,) = torch.autograd.grad(logit, emb)
    res = ex.explain(pixels, "animal", method="grad_x_input", target=6)
    assert torch.allclose(res.maps[0].flatten(), (emb * g).sum(-1)[0, 1:17].detach(), atol=1e-6)
    # (b): the pixels' input x gradient summed per 2 x 2 px patch, patches cut by hand in the processor's order
    px = pixels.clone().requires_grad_(True)
    order = _block_order()
    rows = [None] * (SIDE * SIDE)
    for r in range(SIDE):
        for c in range(SIDE):
            patch = px[0, :, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]
            rows[int(order[r, c])] = patch[:, None].expand(-1, 2, -1, -1).reshape(-1)
    logit = model(input_ids=ids, pixel_values=torch.stack(rows), image_grid_thw=grid,
                  mm_token_type_ids=kinds).logits[0, -1, 6]
    (gp,) = torch.autograd.grad(logit, px)
    expected = (px * gp).sum(1)[0].detach().reshape(SIDE, PATCH, SIDE, PATCH).sum(dim=(1, 3))
    res_b = ex.explain(pixels, "animal", method="grad_x_input", reading="vision", target=6)
    assert torch.allclose(res_b.maps[0], expected, atol=1e-6)
    assert expected.abs().max() > 1e-4


def test_left_padded_logits_are_the_models_own(ex):
    """Each prompt in a left-padded batch gets the logits the model gives it alone, positions computed by itself."""
    model = ex.adapter.model
    pixels = torch.randn(3, 3, 16, 16)
    prompts = ["what is in this photo", "animal", "is this a zebra or a horse"]
    res = ex.explain_methods(pixels, prompts, ["complete"], target=4)[("complete", "language")]
    assert len(set(res.lengths)) == 3  # two of the three rows are padded
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([ex.adapter.prompt_ids(prompt)[0]])
        flat, grid = _processor(pixels[i:i + 1])
        with torch.no_grad():
            own = model(input_ids=ids, pixel_values=flat, image_grid_thw=grid, mm_token_type_ids=(ids == IMAGE).int())
        assert torch.allclose(res.logits[i], own.logits[0, -1], atol=1e-5)


def test_model_left_as_found(ex):
    from transformers import AttentionInterface

    model = ex.adapter.model
    names = {id(b.attn.config): b.attn.config._attn_implementation for b in model.model.visual.blocks}
    registered = set(AttentionInterface._global_mapping)
    model.model.rope_deltas = None  # (the model's own forward, called by other tests, keeps it)
    ex.explain(torch.randn(1, 3, 16, 16), "animal", method="complete", reading="vision")
    with pytest.raises(AttngradError, match=r"one image size, 16 x 16 px; got 32 x 32"):
        ex.explain(torch.randn(1, 3, 32, 32), "animal")
    assert names == {id(b.attn.config): b.attn.config._attn_implementation for b in model.model.visual.blocks}
    assert set(AttentionInterface._global_mapping) == registered
    assert model.model.rope_deltas is None  # positions are passed in, so the model keeps no state of ours


def test_image_size_checks(tokenizer):
    from attngrad.vlm import VLMAdapter

    from .conftest import tiny_llava

    model = tiny_qwen2vl()
    assert VLMAdapter(model, tokenizer, template=TEMPLATE, image_size=24).num_image_tokens == 36
    with pytest.raises(AttngradError, match="multiple of 4 px"):
        VLMAdapter(model, tokenizer, template=TEMPLATE, image_size=18)
    with pytest.raises(AttngradError, match="for Qwen2-VL only"):
        VLMAdapter(tiny_llava("vit"), tokenizer, template=TEMPLATE, image_size=16)
