"""The text tower's batch is the text package's ``Encoded`` plus the row read per text."""

from __future__ import annotations

import torch

from attngrad.clip import TextBatch
from attngrad.text import Encoded


def _batch() -> TextBatch:
    ids = torch.tensor([[1, 5, 2, 0], [1, 6, 7, 2]])
    return TextBatch(["a", "b c"], ids, (ids > 0).long(), ids > 2, [["<s>", "a", "</s>"], ["<s>", "b", "c", "</s>"]],
                     [[None, 0, None], [None, 0, 1, None]], [[(0, 0), (0, 1), (0, 0)], [(0, 0), (0, 1), (2, 3), (0, 0)]],
                     positions=torch.tensor([2, 3]))


def test_text_batch_is_encoded_with_positions():
    batch = _batch()
    assert isinstance(batch, Encoded)
    twice = batch.repeat(2)
    assert isinstance(twice, TextBatch) and twice.texts == ["a", "a", "b c", "b c"]
    assert twice.positions.tolist() == [2, 2, 3, 3] and twice.input_ids[2].tolist() == [1, 6, 7, 2]
    assert twice.tokens[3] == ["<s>", "b", "c", "</s>"] and twice.offsets[1][1] == (0, 1)
    second = batch.rows(slice(1, 2))
    assert isinstance(second, TextBatch) and second.positions.tolist() == [3] and second.word_ids == [[None, 0, 1, None]]
