"""Targets by index, name (case-insensitive, aliases, typos), top-k, or one per image."""

from __future__ import annotations

import pytest
import torch

from attngrad import AttngradError, class_index, resolve_targets

LABELS = ["cat", "dog", "zebra", "African elephant", "tench, Tinca tinca"]
LOGITS = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 1.0, 2.0, 0.0, 4.0]])


def test_forms():
    assert resolve_targets(None, LOGITS, LABELS).tolist() == [1, 0]
    assert resolve_targets("top2", LOGITS, LABELS).tolist() == [3, 4]
    assert resolve_targets("top-3", LOGITS, LABELS).tolist() == [2, 2]
    assert resolve_targets(3, LOGITS, LABELS).tolist() == [3, 3]
    assert resolve_targets("4", LOGITS, LABELS).tolist() == [4, 4]
    assert resolve_targets("african ELEPHANT", LOGITS, LABELS).tolist() == [3, 3]
    assert resolve_targets("Tinca tinca", LOGITS, LABELS).tolist() == [4, 4]
    assert resolve_targets(["zebra", "top1"], LOGITS, LABELS).tolist() == [2, 0]
    assert resolve_targets(torch.tensor([1, 2]), LOGITS, LABELS).tolist() == [1, 2]


def test_names_with_underscores_resolve_as_written_and_with_spaces():
    """Hugging Face's default labels (LABEL_0 ...) and underscored names: the name as the model writes it works
    (it once failed with "did you mean 'label_2'"), and so does the spaced form the gallery's file names give."""
    labels = ["LABEL_0", "LABEL_1", "great_white_shark"]
    assert [class_index(n, labels) for n in ("LABEL_1", "label_1", "label 1", "great_white_shark", "Great white shark")] == [
        1, 1, 1, 2, 2]


def test_typo_lists_three_closest():
    with pytest.raises(AttngradError, match=r"unknown class 'zebr'; did you mean 'zebra'"):
        class_index("zebr", LABELS)


def test_errors():
    with pytest.raises(AttngradError, match="out of range"):
        resolve_targets(7, LOGITS, LABELS)
    with pytest.raises(AttngradError, match="one per image"):
        resolve_targets([1, 2, 3], LOGITS, LABELS)
    with pytest.raises(AttngradError, match="k must be"):
        resolve_targets("top9", LOGITS, LABELS)
