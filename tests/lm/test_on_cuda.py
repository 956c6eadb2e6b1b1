"""Causal LMs on a device give the CPU's maps: every method of :data:`attngrad.lm.LM_METHODS`
(relevance propagation and ``ig`` included) on tiny random Llama (GQA) and GPT-2, left-padded prompts
split over two batches, each streaming mode forced, a generation explained token by token, and a saved
folder loaded with ``device=``.

Skipped unless ``ATTNGRAD_TEST_DEVICE`` (default ``cuda``) is present; see :mod:`tests._devices`.
"""

from __future__ import annotations

import pytest

from attngrad.lm import LM_METHODS, LMExplainer

from .._devices import DEVICE, assert_same, moved, on_device

pytestmark = on_device

#: Different lengths (left padding) over two batches of two.
PROMPTS = ["the capital of france is", "a cat sat on the", "it was a very good movie and i liked this", "dog ran"]
OPTIONS = {"ig": {"steps": 4}}
STREAMED = [m for m in LM_METHODS if m not in ("attnlrp", "tattr", "ig")]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def pair(request, tiny_llama, tiny_gpt2, tokenizer):
    model = tiny_llama if request.param == "llama" else tiny_gpt2
    cpu = LMExplainer(model, tokenizer, batch_size=2)
    there = LMExplainer(moved(model), tokenizer, batch_size=2, device=DEVICE)
    assert there.device.type == DEVICE.split(":")[0] and cpu.device.type == "cpu"
    return request.param, cpu, there


def test_every_method_on_a_padded_batch(pair):
    kind, cpu, there = pair
    for loss, contrast in (("logit", None), ("diff", "runner-up")):
        a = cpu.explain_methods(PROMPTS, LM_METHODS, loss=loss, contrast=contrast, options=OPTIONS)
        b = there.explain_methods(PROMPTS, LM_METHODS, loss=loss, contrast=contrast, options=OPTIONS)
        for m in LM_METHODS:
            assert b[m].targets.tolist() == a[m].targets.tolist(), (kind, m)
            assert_same(a[m].maps, b[m].maps, (kind, loss, m))
            assert_same(a[m].logits, b[m].logits, (kind, loss, m, "logits"))


@pytest.mark.parametrize("mode", ["kept", "maps", "layers"])
def test_streaming_modes(pair, mode):
    kind, cpu, there = pair
    a = cpu.explain_methods(PROMPTS, STREAMED, target="top2")
    saved = there.streaming
    there.streaming = mode
    try:
        b = there.explain_methods(PROMPTS, STREAMED, target="top2")
    finally:
        there.streaming = saved
    for m in STREAMED:
        assert_same(a[m].maps, b[m].maps, (kind, mode, m))


def test_generation(pair):
    kind, cpu, there = pair
    a = cpu.explain_generation("the capital of", max_new_tokens=3, method="complete")
    b = there.explain_generation("the capital of", max_new_tokens=3, method="complete")
    assert a.tokens == b.tokens, kind
    assert b.matrix.isnan().cpu().equal(a.matrix.isnan()), kind  # the columns after each step
    assert_same(a.matrix.nan_to_num(), b.matrix.nan_to_num(), (kind, "generation"))


def test_folder_loaded_with_device(saved_llama):
    """A saved tiny Llama loaded with ``device=`` (the loader's own placement, not a moved copy)."""
    cpu = LMExplainer.from_pretrained(saved_llama, device="cpu", quiet=True)
    there = LMExplainer.from_pretrained(saved_llama, device=DEVICE, quiet=True)
    assert there.device.type == DEVICE.split(":")[0]
    methods = ["complete", "gae", "attnlrp", "grad_x_input"]
    a = cpu.explain_methods(PROMPTS, methods)
    b = there.explain_methods(PROMPTS, methods)
    for m in methods:
        assert_same(a[m].maps, b[m].maps, ("folder", m))
