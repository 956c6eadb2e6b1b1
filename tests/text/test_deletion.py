"""The token-deletion test: the pair set, the removal rule, the curves and their area, by hand."""

from __future__ import annotations

import pytest
import torch

from attngrad.text import TextExplainer
from attngrad.text.deletion import DeletionResult, deleted_ids, removal_count, run_deletion, sentence_pairs

PAIRS = [("the cat sat on a mat", "a dog sat on my car"), ("my team won the game", "the team won"),
         ("how do i fix a flat bike tire ?", "my car is flat and i need a new wheel .")]


def test_sentence_pairs_are_a_fixed_set_of_240_distinct_pairs():
    pairs = sentence_pairs()
    assert len(pairs) == 240 and len(set(pairs)) == 240
    assert pairs[0] == ("How do I fix a flat bicycle tire?", "My bicycle has a flat tire and I need to patch it.")
    assert pairs == sentence_pairs()


def test_removal_count_rounds_to_nearest_half_up():
    assert [removal_count(f, 7) for f in (0.1, 0.2, 0.5, 0.9)] == [1, 1, 4, 6]
    assert [removal_count(f, 5) for f in (0.1, 0.3, 0.5)] == [1, 2, 3]
    assert removal_count(0.1, 4) == 0


def test_deleted_ids_remove_the_highest_scored_content_tokens_in_order():
    ids = torch.tensor([[101, 11, 12, 13, 14, 15, 102, 0], [101, 21, 22, 102, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    content = mask.bool() & ~torch.isin(ids, torch.tensor([101, 102]))
    scores = torch.tensor([[9.0, 0.1, 0.5, -2.0, 0.3, 0.2, 9.0, 9.0], [9.0, -1.0, -0.5, 9.0, 9.0, 9.0, 9.0, 9.0]])
    assert deleted_ids(ids, mask, content, scores, 0.4) == [[101, 11, 13, 15, 102], [101, 21, 102]]
    assert deleted_ids(ids, mask, content, scores, 0.0) == [[101, 11, 12, 13, 14, 15, 102], [101, 21, 22, 102]]
    assert deleted_ids(ids, mask, content, scores, 0.4, lowest_first=True) == [[101, 12, 14, 15, 102], [101, 22, 102]]


def test_auc_is_the_trapezoid_rule_times_100():
    result = DeletionResult([0.0, 0.1, 0.2], {"m": [1.0, 0.5, 0.25]}, pairs=2)
    assert result.auc["m"] == pytest.approx(100 * (0.1 * (1.0 + 0.5) / 2 + 0.1 * (0.5 + 0.25) / 2))
    assert "| m | 11.25 | 0.500 |" in result.table()


def test_curves_equal_a_direct_recomputation(tiny_encoder, tiny_tokenizer, tmp_path):
    explainer = TextExplainer(tiny_encoder, tiny_tokenizer)
    result = run_deletion(explainer, PAIRS, methods=["complete", "random"], fractions=(0.3, 0.6), batch_size=2,
                          progress=False)
    assert result.fractions == [0.0, 0.3, 0.6] and result.pairs == 3

    def embed(ids):
        with torch.no_grad():
            return tiny_encoder(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)

    for method in ("complete", "random"):
        expected = [0.0, 0.0, 0.0]
        for a, b in PAIRS:
            res = explainer.explain(a, against=b, method=method)
            ids = tiny_tokenizer(a)["input_ids"]
            scored = sorted(range(1, len(ids) - 1), key=lambda j: -float(res.maps[0, j]))
            e_b = embed(tiny_tokenizer(b)["input_ids"])
            for k, frac in enumerate((0.0, 0.3, 0.6)):
                gone = set(scored[: int(frac * (len(ids) - 2) + 0.5)])
                kept = [t for j, t in enumerate(ids) if j not in gone]
                expected[k] += float(torch.nn.functional.cosine_similarity(embed(kept), e_b, dim=0)) / len(PAIRS)
        if method == "complete":
            assert result.curves[method] == pytest.approx(expected, rel=1e-9)
        else:  # random scores depend on the padding of the batch they were drawn in: check the unperturbed point
            assert result.curves[method][0] == pytest.approx(expected[0], rel=1e-9)
    path = result.save(tmp_path)
    assert path.exists() and (tmp_path / "curves.csv").read_text().splitlines()[0] == "fraction,complete,random"
