"""Text encoders on a device give the CPU's maps: every text method on a tiny float64 BERT classifier
(per class, and a two-class loss), a tiny BERT read as a sentence pair (``against``) and a zero-shot
labelling (``labels``), and a sentence-transformers folder loaded with ``device=`` (mean pooling,
float32); every call a padded batch of texts of different lengths.

Skipped unless ``ATTNGRAD_TEST_DEVICE`` (default ``cuda``) is present; see :mod:`tests._devices`.
"""

from __future__ import annotations

import pytest

from attngrad.text import TextExplainer

from .._devices import DEVICE, assert_same, moved, on_device

pytestmark = on_device

TEXTS = ["the cat sat on a mat", "my team won", "how do i fix a flat tire on my bike ?"]
OTHERS = ["a dog sat", "the bank and money", "need new wheel"]
METHODS = ["complete", "gae", "absolute", "rollout", "rollout_eq1", "raw_attention", "ig", "grad_x_input", "random"]
POOLED = ["complete", "gae", "absolute", "rollout", "rollout_eq1", "ig", "grad_x_input", "random"]
OPTIONS = {"ig": {"steps": 4}}


def _compare(cpu: TextExplainer, there: TextExplainer, methods, what, **kwargs):
    a = cpu.explain_methods(TEXTS, methods, options=OPTIONS, **kwargs)
    b = there.explain_methods(TEXTS, methods, options=OPTIONS, **kwargs)
    for m in methods:
        assert b[m].targets.tolist() == a[m].targets.tolist(), (what, m)
        assert_same(a[m].maps, b[m].maps, (what, m))
        assert_same(a[m].logits, b[m].logits, (what, m, "logits"))
        if a[m].reverse is not None:
            assert_same(a[m].reverse.maps, b[m].reverse.maps, (what, m, "reverse"))


def test_classifier(tiny_classifier, tiny_tokenizer):
    cpu = TextExplainer(tiny_classifier, tiny_tokenizer)
    there = TextExplainer(moved(tiny_classifier), tiny_tokenizer, device=DEVICE)
    assert there.device.type == DEVICE.split(":")[0]
    _compare(cpu, there, METHODS, "classifier")
    _compare(cpu, there, METHODS, "classifier/repair", target="repair")
    _compare(cpu, there, METHODS, "classifier/normdiff", target="sports", loss="normdiff", contrast="finance")


def test_sentence_pair_and_labels(tiny_encoder, tiny_tokenizer):
    cpu = TextExplainer(tiny_encoder, tiny_tokenizer)
    there = TextExplainer(moved(tiny_encoder), tiny_tokenizer, device=DEVICE)
    methods = [m for m in METHODS if m != "raw_attention" or cpu.adapter.read != "pooled"]
    _compare(cpu, there, methods, "against", against=OTHERS)
    _compare(cpu, there, methods, "labels", labels=["sports", "finance", "repair"])


def test_sentence_transformers_folder(encoder_folder):
    cpu = TextExplainer.from_pretrained(encoder_folder, device="cpu")
    there = TextExplainer.from_pretrained(encoder_folder, device=DEVICE)
    assert cpu.adapter.read == "pooled"
    _compare(cpu, there, POOLED, "folder", against=OTHERS)


@pytest.mark.parametrize("start_layer", [1])
def test_start_layer(tiny_classifier, tiny_tokenizer, start_layer):
    cpu = TextExplainer(tiny_classifier, tiny_tokenizer)
    there = TextExplainer(moved(tiny_classifier), tiny_tokenizer, device=DEVICE)
    methods = ["complete", "gae", "rollout"]
    a = cpu.explain_methods(TEXTS, methods, start_layer=start_layer)
    b = there.explain_methods(TEXTS, methods, start_layer=start_layer)
    for m in methods:
        assert_same(a[m].maps, b[m].maps, ("start_layer", m))
