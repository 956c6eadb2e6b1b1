"""LXMERT results on the tiny random LXMERT read as an :class:`attngrad.Result` (issue 21): ``maps`` is the
region row and a padded region is never a top position."""

from __future__ import annotations

import torch

from attngrad.seq2seq.coattention import CoAttentionExplainer

from ..results_reference import check_result
from .test_coattention import inputs, lxmert  # noqa: F401  (the fixtures)


def test_padded_regions(lxmert, inputs):  # noqa: F811
    ids, feats, boxes = inputs
    regions = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
    res = CoAttentionExplainer(lxmert).explain(ids, feats, boxes, visual_attention_mask=regions, method="gae")
    assert res.maps is res.region_scores and (res.region_scores[regions == 0] == 0).all()
    names = [f"region {j}" for j in range(4)]
    check_result(res, item_values=res.region_scores.tolist(), item_names=[names] * 3,
                 allowed=[[j for j in range(4) if regions[i, j]] for i in range(3)], method="gae", loss="logit", k=4)
