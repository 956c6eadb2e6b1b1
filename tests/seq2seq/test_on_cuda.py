"""Encoder-decoder models on a device give the CPU's maps: every weighting of
:data:`attngrad.seq2seq.WEIGHTINGS` on tiny float64 BART, T5 and Marian, sources and targets of
different lengths padded together, with teacher-forced positions, every target position (``"all"``),
the greedy next token after a prefix, and a two-token loss; and a saved BART folder loaded with ``device=``.

Skipped unless ``ATTNGRAD_TEST_DEVICE`` (default ``cuda``) is present; see :mod:`tests._devices`.
"""

from __future__ import annotations

import pytest

from attngrad.seq2seq import WEIGHTINGS, Seq2SeqExplainer

from .._devices import DEVICE, assert_same, moved, on_device

pytestmark = [on_device, pytest.mark.filterwarnings("ignore::attngrad.seq2seq.explainer.EmptyExplanationWarning")]

SOURCES = ["the cat sat on the mat", "a dog ran in the park and my car is red", "my car"]
TARGETS = ["die katze sass auf der matte", "ein hund lief", "mein auto ist rot"]
METHODS = list(WEIGHTINGS)


@pytest.mark.parametrize("kind", ["bart", "t5", "marian"])
def test_every_weighting(kind):
    from .conftest import make_model

    model, tokenizer = make_model(kind)
    cpu = Seq2SeqExplainer(model, tokenizer)
    there = Seq2SeqExplainer(moved(model), tokenizer, device=DEVICE)
    assert there.adapter.device.type == DEVICE.split(":")[0]
    calls = [
        dict(targets=TARGETS, position=[2, 1, 3]),
        dict(targets=TARGETS, position="all"),
        dict(targets=["die katze", "ein", None], position=None),
        dict(targets=TARGETS, position=[2, 1, 3], loss="diff", contrast="der"),
    ]
    for call in calls:
        a = cpu.explain_methods(SOURCES, methods=METHODS, **call)
        b = there.explain_methods(SOURCES, methods=METHODS, **call)
        for m in METHODS:
            what = (kind, m, str(call))
            assert b[m].tokens.tolist() == a[m].tokens.tolist(), what
            assert_same(a[m].source_scores, b[m].source_scores, what)
            assert_same(a[m].target_scores, b[m].target_scores, (*what, "target"))
            assert_same(a[m].values[:, None], b[m].values[:, None], (*what, "values"))


def test_folder_loaded_with_device(tmp_path):
    """A saved tiny BART loaded with ``device=`` (the loader's own placement)."""
    from .conftest import make_model

    model, tokenizer = make_model("bart")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cpu = Seq2SeqExplainer.from_pretrained(tmp_path, device="cpu")
    there = Seq2SeqExplainer.from_pretrained(tmp_path, device=DEVICE)
    assert there.adapter.device.type == DEVICE.split(":")[0]
    a = cpu.explain_methods(SOURCES, TARGETS, METHODS, position=[2, 1, 3])
    b = there.explain_methods(SOURCES, TARGETS, METHODS, position=[2, 1, 3])
    for m in METHODS:
        assert_same(a[m].source_scores, b[m].source_scores, ("folder", m))
