"""The perturbation metric: AUC arithmetic, exact pixel removal, ranking, and a synthetic model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attngrad.errors import AttngradError
from attngrad.evaluation.perturbation import (
    PerturbationTest,
    auc,
    pixel_ranks,
    removal_counts,
    remove_pixels,
)
from attngrad.methods import Trace, get_method


def test_auc_on_hand_made_curves():
    assert auc([1.0] * 10) == pytest.approx(90.0)
    assert auc([0.0] * 10) == 0.0
    # 1, 0.9, ..., 0.1: trapezoid = 0.1 * (sum - (first + last) / 2) = 0.1 * (5.5 - 0.55)
    assert auc([1 - 0.1 * i for i in range(10)]) == pytest.approx(49.5)
    # a single step down after 0 %: 0.1 * (1 + 0) / 2 * 100 = 5
    assert auc([1.0] + [0.0] * 9) == pytest.approx(5.0)


def test_auc_rejects_wrong_length():
    with pytest.raises(AttngradError, match="10 points"):
        auc([1.0, 0.5])


def test_removal_counts_are_floor_of_fraction():
    assert removal_counts(224 * 224) == [int(np.floor(s / 10 * 224 * 224 + 1e-9)) for s in range(1, 10)]
    assert removal_counts(10) == list(range(1, 10))
    assert removal_counts(7) == [0, 1, 2, 2, 3, 4, 4, 5, 6]


def test_upsampling_is_bilinear_and_ties_keep_pixel_order():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    ranks = pixel_ranks(maps, (4, 4), descending=True)
    # bilinear, half-pixel centres: per-axis weights of the second cell at x = 0..3
    w = np.array([0.0, 0.25, 0.75, 1.0])
    scores = (2 * w[:, None] + w[None, :]).ravel()
    order = np.argsort(-scores, kind="stable")
    expected = np.empty(16, dtype=np.int64)
    expected[order] = np.arange(16)
    assert ranks[0].tolist() == expected.tolist()
    ascending = pixel_ranks(maps, (4, 4), descending=False)
    expected[np.argsort(scores, kind="stable")] = np.arange(16)
    assert ascending[0].tolist() == expected.tolist()


@pytest.mark.parametrize("height,width", [(16, 16), (15, 13)])
def test_removal_touches_exactly_the_requested_pixels(height, width):
    gen = torch.Generator().manual_seed(1)
    unit = torch.rand(3, 3, height, width, generator=gen) * 0.9 + 0.1  # no zero pixels to begin with
    maps = torch.rand(3, 4, 4, generator=gen)
    up = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False).flatten(1)
    ranks = pixel_ranks(maps, (height, width), descending=True)
    for count in removal_counts(height * width):
        out = remove_pixels(unit, ranks, count)
        zero = (out == 0).all(dim=1).flatten(1)  # whole pixels (all channels) set to 0
        assert ((out == 0) == zero.view(3, 1, height, width)).all()  # no pixel half-removed
        assert zero.sum(dim=1).tolist() == [count] * 3
        for b in range(3):  # the removed pixels are the count highest-scored ones
            top = set(np.argsort(-up[b].numpy(), kind="stable")[:count].tolist())
            assert set(torch.nonzero(zero[b]).flatten().tolist()) == top
        assert torch.equal(out[~zero.view(3, 1, height, width).expand_as(out)], unit[~zero.view(3, 1, height, width).expand_as(out)])


def test_directions_state_what_is_better():
    assert PerturbationTest("positive").higher_is_better is False
    assert PerturbationTest("negative").higher_is_better is True
    with pytest.raises(AttngradError, match="positive or negative"):
        PerturbationTest("sideways")


def _synthetic(batch: int, size: int = 16, grid: int = 4):
    """A model whose class-0 logit is the importance-weighted mean of the pixels (class 1's: 0.5).

    The importance ``W`` is a known, peaked grid map upsampled bilinearly, so ranking pixels by
    that map ranks them exactly by how much they move the logit. Images: almost all ones
    (a tiny offset per image gives ``random`` a different seed per image).
    """
    gen = torch.Generator().manual_seed(3)
    true_map = torch.rand(1, grid, grid, generator=gen) ** 6
    weights = F.interpolate(true_map[:, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        score = (x.mean(dim=1) * weights).flatten(1).sum(1) / weights.sum()
        return torch.stack([score, torch.full_like(score, 0.5)], dim=1)

    unit = torch.ones(batch, 3, size, size) - torch.arange(batch).view(-1, 1, 1, 1) * 1e-3
    return unit, true_map.expand(batch, grid, grid), forward


def test_true_importance_beats_random_in_both_directions():
    batch = 12
    unit, true_maps, forward = _synthetic(batch)
    trace = Trace(
        pixel_values=unit, logits=torch.zeros(batch, 2), attentions=[torch.zeros(batch, 1, 17, 17)], gradients=None,
        targets=torch.zeros(batch, dtype=torch.long), contrasts=None, token=0, num_prefix_tokens=1, grid=(4, 4),
        adapter=None,
    )  # fmt: skip
    random_maps = get_method("random")(trace)
    assert not torch.equal(random_maps[0], random_maps[1])
    targets = torch.zeros(batch, dtype=torch.long)
    aucs = {}
    for name, maps in (("true", true_maps), ("random", random_maps)):
        for direction in ("positive", "negative"):
            res = PerturbationTest(direction, batch_size=7)(forward, unit, maps, targets, lambda x: x)
            curve = np.concatenate([[1.0], res.correct.float().mean(0).numpy()])
            aucs[name, direction] = auc(curve)
    assert aucs["true", "positive"] < aucs["random", "positive"] - 10
    assert aucs["true", "negative"] > aucs["random", "negative"] + 10


def test_auc_per_curve_and_its_mean_is_the_auc_of_the_mean_curve():
    curves = np.array([[1.0] * 10, [1.0] + [0.0] * 9, [1 - 0.1 * i for i in range(10)]])
    assert auc(curves) == pytest.approx([90.0, 5.0, 49.5])
    assert auc(curves).mean() == pytest.approx(auc(curves.mean(axis=0)))
