"""Seq2seq results on the tiny random BART read as an :class:`attngrad.Result` (issue 21): ``maps`` is the
source row; ``side="target"`` reads the decoder inputs up to the explained position."""

from __future__ import annotations

from attngrad.seq2seq import Seq2SeqExplainer

from ..results_reference import check_result
from .conftest import make_model


def test_padded_batch_both_sides():
    model, tokenizer = make_model("bart")
    res = Seq2SeqExplainer(model, tokenizer).explain(["the cat sat on the mat", "my car"], ["die katze", "mein auto"],
                                                     method="complete", position=[1, 2])
    src, dec = res.batch.source.tokens, res.batch.decoder.tokens
    assert res.maps is res.source_scores and len(src[1]) < res.maps.shape[1]
    check_result(res, item_values=[res.source_scores[i, : len(t)].tolist() for i, t in enumerate(src)],
                 item_names=src, allowed=[list(range(len(t))) for t in src], method="complete", loss="logit")
    check_result(res, item_values=[res.target_scores[i, : len(t)].tolist() for i, t in enumerate(dec)],
                 item_names=dec, allowed=[list(range(p + 1)) for p in (1, 2)], method="complete", loss="logit",
                 side="target")
