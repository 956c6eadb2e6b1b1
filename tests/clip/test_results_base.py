"""CLIP results on the tiny random CLIP read as an :class:`attngrad.Result` (issue 21), per (image, text)."""

from __future__ import annotations

import pytest

from ..results_reference import check_result
from .conftest import TEXTS


@pytest.mark.parametrize("tower", ["image", "text"])
def test_both_towers(clip_explainer, pixels, tower):
    res = clip_explainer.explain(pixels, TEXTS[:2], method="complete", tower=tower)
    peaks = res.maps.abs().flatten(2).amax(2)
    per_pair = res.maps / peaks.view(*peaks.shape, *[1] * (res.maps.ndim - 2))
    for k in range(2):
        if tower == "image":
            gh, gw = res.maps.shape[-2:]
            assert res.grid == (gh, gw)
            values = [res.maps[b, k].flatten().tolist() for b in range(2)]
            names = [f"({r}, {c})" for r in range(gh) for c in range(gw)]
            allowed = list(range(gh * gw))
        else:
            names = res.batch.tokens[k]
            values = [res.maps[b, k, : len(names)].tolist() for b in range(2)]
            allowed = [j for j in range(len(names)) if res.batch.content[k, j]]
            assert res.grid is None and 0 not in allowed and len(allowed) < len(names)
        check_result(res, item_values=values, item_names=[names] * 2, allowed=[allowed] * 2, method="complete",
                     loss=res.loss, normalized=per_pair, text=k)
