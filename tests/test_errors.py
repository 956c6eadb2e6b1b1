"""``AttngradError`` names the wrong input (``field``) and its valid values (``choices``) where the
library knows them; the server's 422 bodies are built from them."""

from __future__ import annotations

import pickle

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.losses import LOSSES, get_loss
from attngrad.methods import METHODS, get_method
from attngrad.targets import resolve_targets

LABELS = ["cat", "dog", "zebra"]


def test_plain_error_has_no_field_or_choices():
    err = AttngradError("something is wrong; do this")
    assert str(err) == "something is wrong; do this" and err.field is None and err.choices is None
    assert isinstance(err, ValueError)


def test_unknown_method_and_loss_name_the_input_and_the_choices():
    with pytest.raises(AttngradError) as err:
        get_method("magic")
    assert err.value.field == "method" and err.value.choices == list(METHODS) and "'magic'" in str(err.value)
    with pytest.raises(AttngradError) as err:
        get_loss("hinge")
    assert err.value.field == "loss" and err.value.choices == list(LOSSES) and "'hinge'" in str(err.value)


@pytest.mark.parametrize("spec, words", [("zebraa", "did you mean 'zebra'"), ("7", "out of range"), ("top9", "between 1 and 3")])
def test_bad_target_names_the_input_and_the_classes(spec, words):
    with pytest.raises(AttngradError) as err:
        resolve_targets(spec, torch.zeros(1, 3), LABELS)
    assert err.value.field == "target" and err.value.choices == LABELS and words in str(err.value)


def test_field_and_choices_survive_pickling():
    """Errors cross process boundaries (distributed evaluation, worker pools) whole."""
    err = pickle.loads(pickle.dumps(AttngradError("unknown loss 'x'", field="loss", choices=("logit", "diff"))))
    assert type(err) is AttngradError and str(err) == "unknown loss 'x'"
    assert err.field == "loss" and err.choices == ["logit", "diff"]
