"""A left-padded batch on the tiny random LMs reads as an :class:`attngrad.Result` (issue 21): padding never a top token."""

from __future__ import annotations

from ..results_reference import check_result

PROMPTS = ["the capital of france is", "it was", "a cat sat on the mat and"]


def test_left_padded_batch(tiny_lm):
    res = tiny_lm.explain(PROMPTS, method="complete", target=" paris")
    n = res.maps.shape[1]
    lengths = [len(t) for t in res.tokens]
    assert res.batch.lengths == lengths and min(lengths) < n  # the batch is padded on the left
    for i, length in enumerate(lengths):
        assert (res.maps[i, : n - length] == 0).all()  # padding is 0 in the map, and not a position
    check_result(res, item_values=[res.maps[i, n - m :].tolist() for i, m in enumerate(lengths)],
                 item_names=res.tokens, allowed=[list(range(m)) for m in lengths], method="complete", loss="logit")
    # ``it was`` has only 2 tokens: asking for more lists those 2 and no padding
    assert [s.position for s in res.top(1, 10)] == sorted(range(2), key=lambda p: -res.maps[1, n - 2 + p].item())
