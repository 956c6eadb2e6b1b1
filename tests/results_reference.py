"""What every family's result must give as a :class:`attngrad.results.Result`, computed here by hand.

``check_result`` compares a result with plain-Python answers: the per-item peak by a loop, the top
positions by Python's ``sorted`` over ``(-score, position)`` among the positions the test says count.
"""

from __future__ import annotations

import math

import torch

from attngrad import Result
from attngrad.results import Spot


def expected_normalized(maps: torch.Tensor) -> torch.Tensor:
    """Each item divided by its largest magnitude (NaN entries ignored), by a loop over items."""
    out = maps.clone().double()
    for b in range(maps.shape[0]):
        values = [abs(v) for v in maps[b].flatten().tolist() if not math.isnan(v)]
        peak = max(values) if values and max(values) > 0 else 1.0
        out[b] = maps[b].double() / peak
    return out


def expected_top(values: list[float], names: list[str], allowed: list[int], k: int) -> list[tuple[int, str, float]]:
    """The ``k`` best of ``values`` among ``allowed`` positions, best first, ties by position."""
    ranked = sorted(allowed, key=lambda p: (-values[p], p))[:k]
    return [(p, names[p], values[p]) for p in ranked]


def check_result(res, *, item_values, item_names, allowed, method: str, loss: str, k: int = 3, top: str = "top",
                 normalized: torch.Tensor | None = None, **where) -> None:
    """``res`` against values written in the test.

    ``item_values[i]`` / ``item_names[i]``: item ``i``'s scores and position names as the test reads them
    from the family's own fields; ``allowed[i]``: the positions ``top`` may list; ``where``: keyword options
    of the family's ``scores`` / ``position_names`` / ``top`` (``text=`` for CLIP, ``side=`` for seq2seq);
    ``top``: the name of the method that ranks the ``maps`` positions;
    ``normalized``: the expected display maps where a family normalises otherwise than per item (CLIP).
    """
    assert isinstance(res, Result)
    assert res.method == method and res.loss == loss
    want = expected_normalized(res.maps) if normalized is None else normalized.double()
    torch.testing.assert_close(res.normalized().double(), want, equal_nan=True)
    torch.testing.assert_close(torch.as_tensor(res.numpy()), res.maps.detach(), equal_nan=True)
    for i, (values, names, keep) in enumerate(zip(item_values, item_names, allowed)):
        assert res.scores(i, **where).tolist() == values
        assert res.position_names(i, **where) == names
        for kk in (1, k, len(values) + 2):
            got = getattr(res, top)(i, kk, **where)
            assert all(isinstance(s, Spot) for s in got)
            assert [tuple(s) for s in got] == expected_top(values, names, keep, kk), (i, kk)
