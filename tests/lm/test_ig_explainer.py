"""``ig`` served by LMExplainer and explain-lm: against a path integral written here, batched = alone,
generation rows, one meaning of grad_x_input, and explain-lm's --method-option = the API's options."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.lm import LMExplainer

PROMPTS = ["the capital of france is", "a cat sat"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm64(request, tiny_llama, tiny_gpt2, tokenizer):
    """The tiny LMs (float32: in float64 transformers' Llama gives NaN gradients on left padding whose
    embedding is the zero vector, the pad baseline's case)."""
    return LMExplainer(copy.deepcopy(tiny_llama if request.param == "llama" else tiny_gpt2), tokenizer)


def _loop_ig(lm, prompt, *, target, contrast=None, baseline, keep_first, nodes, weights):
    """Integrated gradients of one prompt alone, one path point at a time: Σ_k w_k ∇f(x' + α_k (x − x')) ⊙ (x − x'),
    summed over the embedding features (f: the target's logit, or logit[target] − logit[contrast])."""
    batch = lm.encode(prompt)
    x = lm.adapter.embed(batch.input_ids).detach()
    if baseline == "pad":
        pad = lm.adapter.model.get_input_embeddings().weight[lm.adapter.tokenizer.pad_token_id].detach()
        base = pad.expand_as(x).clone()
    else:  # mean over the prompt's tokens
        base = x.mean(dim=1, keepdim=True).expand_as(x).clone()
    if keep_first:
        base[:, 0] = x[:, 0]
    grad_sum = torch.zeros_like(x)
    for alpha, w in zip(nodes, weights):
        point = (base + float(alpha) * (x - base)).requires_grad_(True)
        logits = lm.adapter.model(inputs_embeds=point, attention_mask=batch.attention_mask).logits[0, -1]
        f = logits[target] - (logits[contrast] if contrast is not None else 0)
        (g,) = torch.autograd.grad(f, point)
        grad_sum += float(w) * g
    return ((x - base) * grad_sum).sum(-1)[0]


def _gauss_legendre(n):
    t, w = np.polynomial.legendre.leggauss(n)
    return (t + 1) / 2, w / 2


def test_default_ig_is_the_path_integral_from_pad_with_the_first_token_kept(lm64):
    res = lm64.explain(PROMPTS, method="ig")  # defaults: input, pad, first token kept, 64 Gauss–Legendre nodes
    nodes, weights = _gauss_legendre(64)
    for i, prompt in enumerate(PROMPTS):
        expected = _loop_ig(lm64, prompt, target=int(res.targets[i]), baseline="pad", keep_first=True,
                            nodes=nodes, weights=weights)
        torch.testing.assert_close(res.scores(i), expected, atol=2e-6, rtol=1e-4)
        assert res.scores(i)[0] == 0  # the kept first token does not move


def test_ig_options_contrast_loss_and_left_padding(lm64):
    """baseline mean, 6 trapezoid intervals, the whole prompt moved, loss diff against the runner-up:
    each prompt of the padded batch equals the loop over its path points, prompt alone."""
    options = {"baseline": "mean", "steps": 6, "rule": "trapezoid", "keep_first": False}
    res = lm64.explain(PROMPTS, method="ig", loss="diff", contrast="runner-up", options=options)
    nodes = np.linspace(0, 1, 7)
    weights = np.full(7, 1 / 6)
    weights[[0, -1]] /= 2
    for i, prompt in enumerate(PROMPTS):
        expected = _loop_ig(lm64, prompt, target=int(res.targets[i]), contrast=int(res.contrasts[i]),
                            baseline="mean", keep_first=False, nodes=nodes, weights=weights)
        torch.testing.assert_close(res.scores(i), expected, atol=2e-6, rtol=1e-4)
    n = res.batch.input_ids.shape[1]
    assert res.maps[1, : n - res.batch.lengths[1]].abs().sum() == 0  # padding scores 0


def test_grad_x_input_is_ig_with_one_node_at_alpha_one_from_zero(lm64):
    """One meaning: the LM's grad_x_input (from the shared pass) is ig at the input, baseline zero, α = 1."""
    both = lm64.explain_methods(PROMPTS, ["grad_x_input", "ig"], options={"ig": {
        "baseline": "zero", "steps": 1, "rule": "riemann_right", "keep_first": False}})
    torch.testing.assert_close(both["ig"].maps, both["grad_x_input"].maps, atol=1e-6, rtol=1e-5)


def test_generation_rows_are_their_prefixes_explained(lm64):
    """Row k of an explained generation = ig of the prompt + the first k generated tokens alone, for token k."""
    from attngrad.lm.ig import batch_path

    options = {"steps": 4, "layer": "hidden:1", "baseline": "mean"}
    gen = lm64.explain_generation("the cat", max_new_tokens=3, method="ig", options=options)
    ids = lm64.adapter.tokenize("the cat")
    full = lm64.generate("the cat", max_new_tokens=3)
    assert len(full) == gen.matrix.shape[0]
    for k, token in enumerate(full):
        alone = batch_path(lm64.adapter, lm64.adapter.batch([ids + full[:k]]), targets=torch.tensor([token]),
                           keep_first=None, **options)
        torch.testing.assert_close(gen.matrix[k, : len(ids) + k], alone.scores[0].float().cpu(),
                                   atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"blur_sigma": 3.0}, "no option blur_sigma"),
    ({"layer": "hidden:1", "keep_first": True}, "keep_first"),
    ({"baseline": "blur"}, "pixels"),
    ({"steps": 0}, "steps"),
    ({"rule": "simpson"}, "unknown rule"),
])
def test_bad_ig_options_are_refused(lm64, options, message):
    with pytest.raises(Exception, match=message):
        lm64.explain(PROMPTS[0], method="ig", options=options)


def test_other_lm_methods_take_no_options(lm64):
    with pytest.raises(Exception, match="no options on a language model"):
        lm64.explain_methods(PROMPTS[0], ["complete"], options={"complete": {"start_layer": 1}})
    with pytest.raises(Exception, match="not among the methods"):
        lm64.explain_methods(PROMPTS[0], ["complete"], options={"ig": {"steps": 2}})


def test_explain_lm_method_options_equal_the_api(saved_llama, tmp_path):
    out = tmp_path / "out"
    args = ["explain-lm", *PROMPTS, "--model", str(saved_llama), "-m", "ig,complete", "--no-color", "--out", str(out),
            "--method-option", "ig.layer=hidden:2", "--method-option", "ig.baseline=mean",
            "--method-option", "ig.steps=8", "--method-option", "ig.rule=trapezoid"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    options = {"layer": "hidden:2", "baseline": "mean", "steps": 8, "rule": "trapezoid"}
    api = LMExplainer.from_pretrained(saved_llama).explain(PROMPTS, method="ig", options=options, loss="diff",
                                                           contrast="runner-up")  # the command's default loss
    records = [p for p in json.loads((out / "scores.json").read_text())["prompts"] if p["method"] == "ig"]
    for i, record in enumerate(records):
        got = torch.tensor([t["score"] for t in record["tokens"]])
        torch.testing.assert_close(got, api.scores(i).float(), atol=0, rtol=0)
    saved = json.loads((out / "method_options.json").read_text())
    assert saved["method_options"] == {"ig": options}
    assert saved["method_option"] == ["ig.baseline=mean", "ig.layer=hidden:2", "ig.rule=trapezoid", "ig.steps=8"]


@pytest.mark.parametrize("spec, message", [
    ("ig.blur_sigma=2", "no option 'blur_sigma'"),
    ("complete.steps=2", "not among the methods"),
    ("ig.steps=many", "whole number"),
    ("ig.keep_first=maybe", "true or false"),
    ("ig.baseline=blur", "pixels"),
    ("ig.layer=hidden:x", "layer must be"),
])
def test_explain_lm_bad_method_options_are_one_line(saved_llama, tmp_path, spec, message):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_llama), "-m", "ig", "--out", str(out),
                                  "--method-option", spec])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error: ") and message in lines[0], lines
    assert not out.exists()
