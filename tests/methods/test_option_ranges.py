"""Every numeric method option has a range: out-of-range, NaN and infinite values are refused in one line,
and a map that comes out non-finite is refused rather than returned."""

from __future__ import annotations

import math

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.methods import METHODS, get_method


@pytest.mark.parametrize("name, options", [
    ("vitcx", dict(noise=math.inf)), ("vitcx", dict(noise=math.nan)), ("vitcx", dict(noise=-0.1)),
    ("vitcx", dict(distance_threshold=0)), ("vitcx", dict(seed=-1)), ("vitcx", dict(batch_size=0)),
    ("tis", dict(tokens_ratio=math.nan)), ("tis", dict(tol=math.inf)), ("tis", dict(n_masks=10**9)),
    ("tis", dict(seed=1.5)), ("tam", dict(steps=0)), ("tam", dict(steps=True)), ("bi", dict(batch_size=-3)),
    ("dix", dict(steps=10**7)),
])
def test_out_of_range_options_are_refused(name, options):
    with pytest.raises(AttngradError, match=next(iter(options))):
        get_method(name, **options)


def test_a_non_finite_map_is_refused(tiny_explainer):
    """A method whose scores break (here: a patched one) is refused, never returned as NaN."""
    cls = METHODS["complete"]

    class Broken(cls):  # type: ignore[misc, valid-type]
        name = "complete"

        def token_scores(self, trace):
            return super().token_scores(trace) * torch.tensor(float("nan"))

    trace = tiny_explainer.trace(torch.randn(1, 3, 32, 32))
    with pytest.raises(AttngradError, match="NaN or infinite"):
        Broken()(trace)
