"""The method registry: registration at the definition, options by name, signed and description."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from attngrad import AttngradError
from attngrad.methods import METHODS, Method, get_method, method_options, register


def test_every_method_has_a_description_and_an_honest_sign():
    for name, cls in METHODS.items():
        assert cls.description and "\n" not in cls.description, name
        assert isinstance(cls.signed, bool), name
    signed = {name for name, cls in METHODS.items() if cls.signed}
    assert {"complete", "lrp"} <= signed
    assert not signed & {"gae", "absolute", "rollout", "rollout_eq1", "raw_attention", "attn_gradcam", "tattr",
                         "partial_lrp", "random"}


def test_options_reach_any_method_by_name():
    assert get_method("complete", start_layer=2).start_layer == 2
    assert get_method("tattr", start_layer=1).start_layer == 1
    assert get_method("gae", renormalize=True).renormalize is True
    assert get_method("rollout").start_layer == 0 and get_method("raw_attention").name == "raw_attention"
    assert get_method("gae", start_layer=None).start_layer == 0  # None: the method's default
    with pytest.raises(AttngradError, match="method 'raw_attention' has no option start_layer; it takes no options"):
        get_method("raw_attention", start_layer=1)
    with pytest.raises(AttngradError, match="no option strat_layer; it takes start_layer, renormalize"):
        get_method("complete", strat_layer=1)
    with pytest.raises(AttngradError, match="unknown method 'nope'; choose from complete, gae"):
        get_method("nope")


def test_register_at_the_definition_with_options():
    try:
        @register
        class Scaled(Method):
            name = "test_scaled"
            description = "a test method"
            signed: ClassVar[bool] = True
            needs_gradients = False

            def __init__(self, *, scale: float = 1.0):
                self.scale = scale

            def token_scores(self, trace):
                return self.scale * trace.attentions[-1].mean(dim=1)[:, trace.token]

        assert METHODS["test_scaled"] is Scaled and method_options(Scaled) == ["scale"]
        assert get_method("test_scaled", scale=3.0).scale == 3.0
    finally:
        METHODS.pop("test_scaled", None)
    with pytest.raises(TypeError, match="has no name"):
        register(type("Nameless", (Method,), {}))


def test_a_registered_method_runs_through_the_explainer(tiny_explainer, tiny_pixels):
    try:
        @register
        class Doubled(Method):
            name = "test_doubled"
            description = "raw attention times a factor"
            needs_gradients = False

            def __init__(self, *, factor: float = 2.0):
                self.factor = factor

            def token_scores(self, trace):
                return self.factor * trace.attentions[-1].mean(dim=1)[:, trace.token]

        res = tiny_explainer.explain(tiny_pixels, method="test_doubled")
        raw = tiny_explainer.explain(tiny_pixels, method="raw_attention")
        torch.testing.assert_close(res.maps, 2 * raw.maps)
    finally:
        METHODS.pop("test_doubled", None)
