"""Model-parameter randomisation test (Adebayo et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attngrad.evaluation import discover
from attngrad.evaluation.sanity import cascade, randomisation_test, spearman
from attngrad.methods import METHODS, Method, register


def test_spearman_matches_the_textbook_formula():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 20, generator=gen), torch.rand(4, 20, generator=gen)
    def textbook(x, y):  # distinct values: rho = 1 - 6 sum d^2 / (n (n^2 - 1)), ranks by counting
        n = len(x)
        rx = [sum(v < xi for v in x) for xi in x]
        ry = [sum(v < yi for v in y) for yi in y]
        return 1 - 6 * sum((p - q) ** 2 for p, q in zip(rx, ry)) / (n * (n * n - 1))

    expected = [textbook(a[i].tolist(), b[i].tolist()) for i in range(4)]
    assert spearman(a, b).numpy() == pytest.approx(np.array(expected))
    assert spearman(a, a).numpy() == pytest.approx(np.ones(4))
    assert spearman(a, -a).numpy() == pytest.approx(-np.ones(4))


class _ModelBlind(Method):
    """A map that ignores the model: the image's mean brightness per patch (an edge-detector-like baseline)."""

    name = "_test_model_blind"
    needs_gradients = False

    def token_scores(self, trace):
        gh, gw = trace.grid
        cells = torch.nn.functional.adaptive_avg_pool2d(trace.pixel_values.mean(1, keepdim=True), (gh, gw)).flatten(1)
        return torch.cat([cells.new_zeros(cells.shape[0], trace.num_prefix_tokens), cells], dim=1)


def test_randomisation_changes_gradient_maps_but_not_a_model_blind_map(tiny_explainer, image_dir):
    register(_ModelBlind)
    try:
        before = {k: v.clone() for k, v in tiny_explainer.adapter.model.state_dict().items()}
        steps = cascade(tiny_explainer.adapter.model, 2)
        assert [n for n, _ in steps] == ["classifier", "vit.layers.1", "vit.layers.0"]
        dataset = discover(image_dir, tiny_explainer.labels)
        summary = randomisation_test(tiny_explainer, dataset, ["gae", "_test_model_blind"], batch_size=4, progress=False)
        assert len(summary["steps"]) == 3 and summary["images"] == 8
        assert summary["methods"]["_test_model_blind"] == pytest.approx([1.0, 1.0, 1.0])
        assert summary["methods"]["gae"][-1] < 0.9  # the fully randomised model gives other maps
        after = tiny_explainer.adapter.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # the trained model is untouched
    finally:
        METHODS.pop(_ModelBlind.name, None)


@pytest.mark.parametrize("batch_size", [0, -2])
def test_sanity_refuses_a_batch_size_below_one(tiny_explainer, image_dir, batch_size):
    from attngrad.errors import AttngradError
    from attngrad.evaluation import discover
    from attngrad.evaluation.sanity import randomisation_test

    with pytest.raises(AttngradError, match="--batch-size must be a positive"):
        randomisation_test(tiny_explainer, discover(image_dir, tiny_explainer.labels), ["gae"], batch_size=batch_size)
