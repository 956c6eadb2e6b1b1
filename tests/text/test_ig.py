"""Integrated gradients (methods/ig.py) on a text classifier: completeness, the pad baseline, first order."""

from __future__ import annotations

import torch

from attngrad.methods import get_method
from attngrad.text import TextExplainer

# different lengths (padding): the attention path keeps the padding mask (models/hf.py: the override registers the model's mask function)
TEXTS = ["my team won the game", "fix my bike"]


def test_text_paths_complete_and_first_order(tiny_classifier, tiny_tokenizer):
    ex = TextExplainer(tiny_classifier, tiny_tokenizer)
    task = ex.task()
    encoded = ex.encode(task.sequences(TEXTS))
    for layer, baseline in [("input", "pad"), ("input", "mask"), ("hidden:1", "mean"), ("attention:2", "uniform")]:
        m = get_method("ig", layer=layer, baseline=baseline, steps=24)
        trace = ex.trace(encoded, task, methods=[m])
        _, res = m.path(trace)
        assert res.error()["relative"].max() < 1e-4, (layer, baseline, res.error())
        torch.testing.assert_close(m.token_scores(trace).sum(dim=1), res.total)
    trace = ex.trace(encoded, task)
    # attention:K at one right node from 0 is complete's layer term, summed over heads and query rows
    for k in range(3):
        m = get_method("ig", layer=f"attention:{k}", steps=1, rule="riemann_right")
        got = m.token_scores(ex.trace(encoded, task, methods=[m]))
        torch.testing.assert_close(got, (trace.gradients[k] * trace.attentions[k]).sum(dim=(1, 2)))


def test_text_explainer_serves_ig_and_grad_x_input(tiny_classifier, tiny_tokenizer):
    """``TextExplainer.explain(method="ig")``: the trace's IG token scores on the scored tokens, 0 elsewhere."""
    ex = TextExplainer(tiny_classifier, tiny_tokenizer)
    res = ex.explain_methods(TEXTS, ["ig", "grad_x_input"])
    task = ex.task()
    encoded = ex.encode(task.sequences(TEXTS))
    for name in ("ig", "grad_x_input"):
        m = get_method(name)
        want = m.token_scores(ex.trace(encoded, task, methods=[m])) * encoded.content
        torch.testing.assert_close(res[name].maps, want)
        assert res[name].maps.abs().sum() > 0


def test_mean_baseline_of_a_padded_text_is_its_own(tiny_classifier, tiny_tokenizer):
    """``mean`` averages a text's real tokens only, so a padded text gets the map it gets alone."""
    ex = TextExplainer(tiny_classifier, tiny_tokenizer)
    for layer in ("input", "hidden:1"):
        m = {"ig": get_method("ig", layer=layer, baseline="mean", steps=8)}
        task = ex.task()
        both = ex.encode(task.sequences(TEXTS))
        short = ex.encode(task.sequences(TEXTS[1:]))
        got = m["ig"].token_scores(ex.trace(both, task, methods=[m["ig"]]))[1]
        alone = m["ig"].token_scores(ex.trace(short, task, methods=[m["ig"]]))[0]
        n = int(short.attention_mask.sum())
        torch.testing.assert_close(got[:n], alone[:n], rtol=1e-4, atol=1e-6)
