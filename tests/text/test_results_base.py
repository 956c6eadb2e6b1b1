"""Text results on the tiny random BERT read as an :class:`attngrad.Result` (issue 21): special tokens and
padding are never top positions."""

from __future__ import annotations

from attngrad.text import TextExplainer

from ..results_reference import check_result

TEXTS = ["the cat sat on a mat", "fix my bike"]


def test_right_padded_batch(tiny_classifier, tiny_tokenizer):
    res = TextExplainer(tiny_classifier, tiny_tokenizer).explain(TEXTS, method="complete")
    tokens = res.encoded.tokens
    assert tokens[1][0] == "[CLS]" and tokens[1][-1] == "[SEP]" and len(tokens[1]) < res.maps.shape[1]
    check_result(res, item_values=[res.maps[i, : len(t)].tolist() for i, t in enumerate(tokens)], item_names=tokens,
                 allowed=[list(range(1, len(t) - 1)) for t in tokens], method="complete", loss="logit")
