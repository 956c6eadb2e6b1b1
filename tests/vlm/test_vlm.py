"""VLMExplainer against loops written from the equations, on tiny random LLaVA models.

The reference runs the model's parts by hand (vision tower -> projector -> image tokens placed
in the embeddings -> language model -> head), takes the gradients of the target logit with
respect to every map of both towers, and forms the rollouts with explicit loops over layers
and heads and full matrix products: nothing of attngrad's code is used.
"""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError

from .conftest import IMAGE, TEMPLATE, tiny_llava


def _reference(ex, pixels, prompt, method, reading, target, value=None):
    a = ex.adapter
    model, tok = a.model, a.tokenizer
    cfg = model.config
    before, after = TEMPLATE.split("<image>")
    k = a.num_image_tokens
    head = tok(before.format(prompt=prompt), add_special_tokens=True)["input_ids"]
    tail = tok(after.format(prompt=prompt), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + [IMAGE] * k + tail])
    idefics = type(model).__name__.startswith("Idefics3")
    if idefics:  # SigLIP-style encoder (no class token) -> pixel shuffle 2 -> projection; 4 x 4 patches -> 2 x 2 tokens
        vout = model.model.vision_model(pixel_values=pixels, output_attentions=True)
        img = model.model.connector(vout.last_hidden_state)
        groups = [[(2 * i + di) * 4 + 2 * j + dj for di in (0, 1) for dj in (0, 1)] for i in (0, 1) for j in (0, 1)]
        depth, first, lm = len(vout.attentions), 0, model.model.text_model
    else:
        vout = model.model.vision_tower(pixels, output_attentions=True, output_hidden_states=True)
        feat = vout.hidden_states[cfg.vision_feature_layer]
        full = cfg.vision_feature_select_strategy == "full"
        img = model.model.multi_modal_projector(feat if full else feat[:, 1:])
        groups = [[j] for j in range(0 if full else 1, 17)]
        depth, first, lm = cfg.vision_feature_layer % (len(vout.attentions) + 1), 1, model.model.language_model
    vmaps = list(vout.attentions)
    emb = model.get_input_embeddings()(ids).clone()
    emb[0, len(head):len(head) + k] = img[0]
    out = lm(inputs_embeds=emb, output_attentions=True)
    tmaps = list(out.attentions)
    last = model.lm_head(out.last_hidden_state)[0, -1]
    logit = last[target] if value is None else value(last)  # value: the explained quantity from the logits
    grads = torch.autograd.grad(logit, tmaps + vmaps, allow_unused=True)
    grads = [torch.zeros_like(m) if g is None else g for m, g in zip(tmaps + vmaps, grads)]

    def weight(attn, grad):
        if method == "complete":
            return grad * attn
        if method == "rollout":
            return attn
        if method == "gae":
            return (grad * attn).clamp(min=0)
        return grad.abs() * attn

    def product(maps, gs):
        n = maps[0].shape[-1]
        r = torch.eye(n, dtype=torch.float64)
        for attn, grad in zip(maps, gs):
            heads = attn.shape[1]
            m = torch.zeros(n, n, dtype=torch.float64)
            for h in range(heads):
                m += weight(attn[0, h], grad[0, h]).double() / heads
            abar = torch.eye(n, dtype=torch.float64) + m
            if method == "rollout":
                abar = abar / abar.sum(dim=1, keepdim=True)
            r = abar @ r
        return r

    nt = len(tmaps)
    r = product(tmaps, grads[:nt])
    row = r[-1].clone()
    if method != "rollout":
        row[-1] -= 1.0
    image = row[len(head):len(head) + k]
    if reading == "language":
        patches = image[1:] if a.keeps_cls else image
        grid = (2, 2) if idefics else (4, 4)
    else:
        rv = product(vmaps[:depth], grads[nt:nt + depth])
        patches = torch.zeros(rv.shape[0], dtype=torch.float64)
        for j in range(k):
            for t in groups[j]:
                patches += image[j] / len(groups[j]) * rv[t]
        patches = patches[first:]
        grid = (4, 4)
    text = row.clone()
    text[len(head):len(head) + k] = 0
    return patches.reshape(grid).float().detach(), text.float().detach()


@pytest.mark.parametrize("method", ["complete", "gae", "absolute", "rollout"])
@pytest.mark.parametrize("reading", ["language", "vision"])
def test_matches_loops(explainer, method, reading):
    if explainer.adapter.qwen:
        pytest.skip("Qwen2-VL's reference (flattened patches, 3-D positions) is in test_qwen2vl.py")
    torch.manual_seed(3)
    pixels = torch.randn(1, 3, 16, 16)
    res = explainer.explain(pixels, "what is in this photo", method=method, reading=reading, target=5)
    maps, text = _reference(explainer, pixels, "what is in this photo", method, reading, 5)
    scale = maps.abs().max()
    assert scale > 0
    assert torch.allclose(res.maps[0], maps, atol=1e-5 * float(scale)), (res.maps[0], maps)
    n = res.lengths[0]
    # the last position's score is (R - I)[last, last]: 1 + s - 1 in float32 leaves an error of about 1e-7
    assert torch.allclose(res.text_scores[0, -n:], text, atol=max(1e-5 * float(text.abs().max()), 1e-6))


def test_batched_and_left_padded_equal_alone(explainer):
    torch.manual_seed(4)
    pixels = torch.randn(3, 3, 16, 16)
    prompts = ["what is in this photo", "animal", "is this a zebra or a horse"]
    for method in ("complete", "grad_x_input", "raw_attention"):
        together = explainer.explain(pixels, prompts, method=method, target=7)
        for i in range(3):
            alone = explainer.explain(pixels[i:i + 1], prompts[i], method=method, target=7)
            assert torch.allclose(together.maps[i], alone.maps[0], atol=1e-5), method
            n = alone.lengths[0]
            assert torch.allclose(together.text_scores[i, -n:], alone.text_scores[0, -n:], atol=1e-5), method
            assert (together.text_scores[i, :-n] == 0).all()


@pytest.mark.parametrize("reading", ["language", "vision"])
def test_against_the_others_matches_loops(explainer, reading):
    """Row k explains token k rather than the mean of the other rows' tokens (the grid's cell-by-cell contrast)."""
    from attngrad.vlm import against_the_others

    if explainer.adapter.qwen:
        pytest.skip("Qwen2-VL's reference is in test_qwen2vl.py")
    torch.manual_seed(4)
    pixels = torch.randn(1, 3, 16, 16)
    tokens = [5, 6, 7, 8]
    (res,) = explainer.explain_methods(pixels.expand(4, -1, -1, -1), "animal", ["complete"], readings=[reading],
                                       target=tokens, loss=against_the_others(tokens)).values()
    for k, t in enumerate(tokens):
        others = [u for u in tokens if u != t]

        def value(logits, t=t, others=others):
            return logits[t] - sum(logits[u] for u in others) / len(others)

        maps, _ = _reference(explainer, pixels, "animal", "complete", reading, t, value=value)
        assert float(maps.abs().max()) > 0
        assert torch.allclose(res.maps[k], maps, atol=1e-5 * float(maps.abs().max())), (k, res.maps[k], maps)


def test_against_the_others_grad_x_input_and_refusals(tokenizer):
    from attngrad.vlm import VLMAdapter, VLMExplainer, against_the_others, mean_contrast

    model = tiny_llava("vit")
    ex = VLMExplainer(VLMAdapter(model, tokenizer, template=TEMPLATE))
    pixels = torch.randn(1, 3, 16, 16)
    res = ex.explain_methods(pixels.expand(3, -1, -1, -1), "animal", ["grad_x_input"], target=[4, 6, 9],
                             loss=against_the_others([4, 6, 9]))[("grad_x_input", "language")]
    ids = torch.tensor([tokenizer("user")["input_ids"] + [IMAGE] * 16 + tokenizer("animal answer")["input_ids"]])
    feats = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
    emb = model.get_input_embeddings()(ids).detach().clone()
    emb[0, 1:17] = model.model.multi_modal_projector(feats)[0].detach()
    emb.requires_grad_(True)
    logits = model.lm_head(model.model.language_model(inputs_embeds=emb).last_hidden_state)[0, -1]
    for k, (t, others) in enumerate([(4, (6, 9)), (6, (4, 9)), (9, (4, 6))]):
        (g,) = torch.autograd.grad(logits[t] - (logits[others[0]] + logits[others[1]]) / 2, emb, retain_graph=True)
        assert torch.allclose(res.maps[k].flatten(), (emb * g).sum(-1)[0, 1:17].detach(), atol=1e-5)
    with pytest.raises(AttngradError, match="at least two different"):
        against_the_others([4, 4])
    with pytest.raises(AttngradError, match="same number"):
        mean_contrast({1: [2], 2: [1, 3]})
    with pytest.raises(AttngradError, match="the target itself"):
        mean_contrast({4: [4, 5]})
    with pytest.raises(AttngradError, match="no contrast tokens for target id"):
        ex.explain(pixels, "animal", target=5, loss=against_the_others([4, 6]))
    with pytest.raises(AttngradError, match="out of range"):
        ex.explain(pixels, "animal", target=4, loss=mean_contrast({4: [10_000]}))


def test_grad_x_input_is_embeddings_times_gradient(tokenizer):
    from attngrad.vlm import VLMAdapter, VLMExplainer

    model = tiny_llava("vit")
    ex = VLMExplainer(VLMAdapter(model, tokenizer, template=TEMPLATE))
    pixels = torch.randn(1, 3, 16, 16)
    res = ex.explain(pixels, "animal", method="grad_x_input", target=6)
    ids = torch.tensor([tokenizer("user")["input_ids"] + [IMAGE] * 16 + tokenizer("animal answer")["input_ids"]])
    feats = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
    emb = model.get_input_embeddings()(ids).detach().clone()
    emb[0, 1:17] = model.model.multi_modal_projector(feats)[0].detach()
    emb.requires_grad_(True)
    logit = model.lm_head(model.model.language_model(inputs_embeds=emb).last_hidden_state)[0, -1, 6]
    (g,) = torch.autograd.grad(logit, emb)
    expected = (emb * g).sum(-1)[0].detach()
    assert torch.allclose(res.maps[0].flatten(), expected[1:17], atol=1e-5)
    # reading (b): the pixels' input x gradient summed per 4 x 4 patch
    res_b = ex.explain(pixels, "animal", method="grad_x_input", reading="vision", target=6)
    px = pixels.clone().requires_grad_(True)
    logit = model(input_ids=ids, pixel_values=px).logits[0, -1, 6]
    (gp,) = torch.autograd.grad(logit, px)
    per_pixel = (px * gp).sum(1)[0].detach()
    expected_b = per_pixel.reshape(4, 4, 4, 4).sum(dim=(1, 3))
    assert torch.allclose(res_b.maps[0], expected_b, atol=1e-5)


def test_logits_match_the_model_and_weights_untouched(explainer):
    model = explainer.adapter.model
    if explainer.adapter.qwen:
        pytest.skip("Qwen2-VL's logits are checked against the model in test_qwen2vl.py")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    pixels = torch.randn(1, 3, 16, 16)
    res = explainer.explain(pixels, "animal", method="complete")
    ids, _ = explainer.adapter.prompt_ids("animal")
    shaped = pixels[:, None] if type(model).__name__.startswith("Idefics3") else pixels  # Idefics3: images per prompt
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=shaped).logits[0, -1]
    assert torch.allclose(res.logits[0], logits, atol=1e-5)
    assert int(res.targets[0]) == int(logits.argmax())  # default target: the greedy next token
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == [p.requires_grad for p in model.parameters()]
    assert hooks == [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]  # ours removed


def test_contrast_and_loss(explainer):
    pixels = torch.randn(1, 3, 16, 16)
    diff = explainer.explain(pixels, "animal", target="zebra", contrast="horse", loss="diff")
    assert diff.maps.abs().sum() > 0 and diff.signed
    with pytest.raises(AttngradError, match="contrast equals the target"):
        explainer.explain(pixels, "animal", target="zebra", contrast="zebra", loss="diff")
    with pytest.raises(AttngradError, match="compares two tokens"):
        explainer.explain(pixels, "animal", loss="diff")


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="tis"), "unknown method"),
    (dict(reading="both"), "unknown reading"),
    (dict(target=10_000), "out of range"),
    (dict(target="top0"), "k must be between 1"),
    (dict(target="top999999"), "this model's vocabulary"),
])
def test_refusals(explainer, kwargs, message):
    with pytest.raises(AttngradError, match=message):
        explainer.explain(torch.randn(1, 3, 16, 16), "animal", **kwargs)


def test_prompt_and_template_errors(tokenizer):
    from attngrad.vlm import VLMAdapter, VLMExplainer

    model = tiny_llava("vit")
    with pytest.raises(AttngradError, match="template"):
        VLMAdapter(model, tokenizer, template="no image here {prompt}")
    ex = VLMExplainer(VLMAdapter(model, tokenizer, template=TEMPLATE))
    with pytest.raises(AttngradError, match="empty"):
        ex.explain(torch.randn(1, 3, 16, 16), "  ")
    with pytest.raises(AttngradError, match="2 prompts for 1 images"):
        ex.explain(torch.randn(1, 3, 16, 16), ["a", "b"])


def test_other_models_refused(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from attngrad.vlm import VLMAdapter

    lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2))
    with pytest.raises(AttngradError, match="LlavaForConditionalGeneration.*Qwen2VLForConditionalGeneration"):
        VLMAdapter(lm, tokenizer)


def test_one_pass_serves_every_method_and_reading(explainer):
    pixels = torch.randn(2, 3, 16, 16)
    methods = ["complete", "gae", "rollout", "raw_attention", "grad_x_input", "random"]
    shared = explainer.explain_methods(pixels, "animal", methods, readings=["language", "vision"], target=5)
    for (method, reading), res in shared.items():
        alone = explainer.explain(pixels, "animal", method=method, reading=reading, target=5)
        assert torch.allclose(res.maps, alone.maps, atol=1e-6), (method, reading)
        assert torch.allclose(res.text_scores, alone.text_scores, atol=1e-6), (method, reading)


def test_generation_rows_are_prefix_explanations(explainer):
    pixels = torch.randn(1, 3, 16, 16)
    new = explainer.generate(pixels, "animal", max_new_tokens=3)
    gen = explainer.explain_generation(pixels, "animal", max_new_tokens=3, method="complete")
    assert gen.maps.shape[0] == len(new) and gen.targets.tolist() == new
    ids, start = explainer.adapter.prompt_ids("animal")
    last = len(new) - 1
    alone = explainer._explain_ids(pixels, [(ids + new[:last], start)], [new[last]], None, [("complete", "language")],
                                   __import__("attngrad").losses.get_loss("logit"))
    (alone,) = alone.values()
    assert torch.allclose(gen.maps[last], alone.maps[0], atol=1e-6)


def test_a_batch_that_cannot_fit_is_refused_before_the_pass(explainer, monkeypatch):
    """The maps and their gradients of every language-model layer are kept: a prompt too long for the free memory is
    refused in one line (a 3,000-word prompt was killed by the system instead); with room, the same call runs."""
    from attngrad.lm import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 10_000)
    with pytest.raises(AttngradError, match=r"1 sequence\(s\) of \d+ tokens need about .* GB .* more than 90 % of the 0.0 GB free"):
        explainer.explain(torch.rand(1, 3, 16, 16), "what animal")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**40)
    assert torch.isfinite(explainer.explain(torch.rand(1, 3, 16, 16), "what animal").maps).all()
