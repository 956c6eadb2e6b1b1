"""The perturbation metric: AUC arithmetic, exact pixel removal, ranking, and a synthetic model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attngrad.errors import AttngradError
from attngrad.evaluation.perturbation import (
    InsertionDeletion,
    PerturbationTest,
    auc,
    blur,
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


def test_auc_of_insertion_deletion_curves_spans_0_to_100_percent():
    assert auc([1.0] * 11) == pytest.approx(100.0)
    assert auc([i / 10 for i in range(11)]) == pytest.approx(50.0)  # the diagonal


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


def test_removal_with_a_fill_takes_exactly_the_requested_pixels_from_it():
    gen = torch.Generator().manual_seed(2)
    unit, fill = torch.rand(2, 3, 9, 7, generator=gen), torch.rand(2, 3, 9, 7, generator=gen) + 2.0
    ranks = pixel_ranks(torch.rand(2, 3, 3, generator=gen), (9, 7), descending=True)
    out = remove_pixels(unit, ranks, torch.tensor([5, 20]), fill)
    from_fill = (out >= 2.0).all(dim=1).flatten(1)  # fill's values are >= 2, unit's < 1
    assert from_fill.sum(dim=1).tolist() == [5, 20]
    for b, count in enumerate((5, 20)):
        assert set(torch.nonzero(from_fill[b]).flatten().tolist()) == set(torch.nonzero(ranks[b] < count).flatten().tolist())
    mask = from_fill.view(2, 1, 9, 7).expand_as(out)
    assert torch.equal(out[mask], fill[mask]) and torch.equal(out[~mask], unit[~mask])


def test_blur_is_an_11x11_gaussian_with_reflected_borders():
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, 16, 13, generator=gen, dtype=torch.float64)
    # the 11 x 11 kernel from its equation, exp(-(dx^2 + dy^2) / (2 sigma^2)) normalised, applied by hand
    d = np.arange(11) - 5
    kernel = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * 5.0**2))
    kernel /= kernel.sum()
    padded = np.pad(image.numpy(), ((0, 0), (0, 0), (5, 5), (5, 5)), mode="reflect")
    expected = np.zeros_like(image.numpy())
    for y in range(16):
        for x in range(13):
            expected[..., y, x] = (padded[..., y : y + 11, x : x + 11] * kernel).sum(axis=(-2, -1))
    assert np.allclose(blur(image).numpy(), expected, atol=1e-12)
    assert torch.allclose(blur(torch.full((1, 3, 12, 12), 0.3)), torch.full((1, 3, 12, 12), 0.3))


def test_directions_state_what_is_better():
    assert PerturbationTest("positive").higher_is_better is False
    assert PerturbationTest("negative").higher_is_better is True
    assert InsertionDeletion("insertion").higher_is_better is True
    assert InsertionDeletion("deletion").higher_is_better is False
    with pytest.raises(AttngradError, match="positive or negative"):
        PerturbationTest("sideways")
    with pytest.raises(AttngradError, match="insertion or deletion"):
        InsertionDeletion("positive")


def _synthetic(batch: int, size: int = 16, grid: int = 4, scale: float = 1.0):
    """A model whose class-0 logit is ``scale`` x the importance-weighted mean of the pixels
    (class 1's: ``scale`` x 0.5).

    The importance ``W`` is a known, peaked grid map upsampled bilinearly, so ranking pixels by
    that map ranks them exactly by how much they move the logit. Images: almost all ones
    (a tiny offset per image gives ``random`` a different seed per image).
    """
    gen = torch.Generator().manual_seed(3)
    true_map = torch.rand(1, grid, grid, generator=gen) ** 6
    weights = F.interpolate(true_map[:, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        score = (x.mean(dim=1) * weights).flatten(1).sum(1) / weights.sum()
        return scale * torch.stack([score, torch.full_like(score, 0.5)], dim=1)

    unit = torch.ones(batch, 3, size, size) - torch.arange(batch).view(-1, 1, 1, 1) * 1e-3
    return unit, true_map.expand(batch, grid, grid), forward, weights


def test_true_importance_beats_random_in_both_directions():
    batch = 12
    unit, true_maps, forward, _ = _synthetic(batch)
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


def test_true_importance_beats_random_in_insertion_and_deletion():
    batch = 12
    unit, true_maps, forward, weights = _synthetic(batch, scale=20.0)
    # bright only where the model looks: blurring dims it, so inserting those pixels first pays
    unit = unit * (weights >= weights.flatten().quantile(0.8)).to(unit.dtype)
    random_maps = torch.rand(batch, 4, 4, generator=torch.Generator().manual_seed(5))
    targets = torch.zeros(batch, dtype=torch.long)

    def probability(x: torch.Tensor) -> torch.Tensor:
        return forward(x).softmax(-1)[:, 0]

    ends = {"insertion": (probability(blur(unit)), probability(unit)),
            "deletion": (probability(unit), probability(torch.zeros_like(unit)))}  # fmt: skip
    aucs = {}
    for name, maps in (("true", true_maps), ("random", random_maps)):
        for direction, (first, last) in ends.items():
            res = InsertionDeletion(direction, batch_size=5)(forward, unit, maps, targets, lambda x: x)
            assert res.probability.shape == (batch, 9)
            curve = torch.cat([first[:, None], res.probability, last[:, None]], dim=1).mean(0).numpy()
            aucs[name, direction] = auc(curve)
    assert aucs["true", "insertion"] > aucs["random", "insertion"] + 5
    assert aucs["true", "deletion"] < aucs["random", "deletion"] - 5


def test_auc_per_curve_and_its_mean_is_the_auc_of_the_mean_curve():
    curves = np.array([[1.0] * 10, [1.0] + [0.0] * 9, [1 - 0.1 * i for i in range(10)]])
    assert auc(curves) == pytest.approx([90.0, 5.0, 49.5])
    assert auc(curves).mean() == pytest.approx(auc(curves.mean(axis=0)))
