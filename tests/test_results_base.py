"""Every family's result is an :class:`attngrad.Result`: ``maps``, ``method``, ``loss``, ``normalized()``,
``numpy()``, ``scores(i)``, ``position_names(i)``, ``top(i, k)`` read alike (issue 21).

Here each family's result class is built from tensors written in the test (padding, special tokens and
ties placed on purpose), plus the image explainer on the tiny random ViT; the tests under ``lm/``,
``text/``, ``clip/`` and ``seq2seq/`` do the same on each family's tiny random model.
"""

from __future__ import annotations

import math

import pytest
import torch

import attngrad
from attngrad import Result, Spot
from attngrad.clip.explainer import ClipExplanation
from attngrad.clip.towers import TextBatch
from attngrad.lm.explainer import GenerationExplanation, LMExplanation
from attngrad.lm.model import Batch as LMBatch
from attngrad.seq2seq.coattention import CoAttentionExplanation
from attngrad.seq2seq.explainer import Seq2SeqExplanation
from attngrad.seq2seq.model import Batch as PairBatch
from attngrad.seq2seq.model import Side
from attngrad.text.results import Encoded, TextExplanation
from attngrad.vlm.explainer import VLMExplanation

from .results_reference import check_result

GRID_2x3 = ["(0, 0)", "(0, 1)", "(0, 2)", "(1, 0)", "(1, 1)", "(1, 2)"]


def test_the_base_is_public():
    assert attngrad.Result is Result and attngrad.Spot is Spot
    assert {"Result", "Spot"} <= set(attngrad.__all__)
    from attngrad.results import Explanation
    from attngrad.stitch import GuidedExplanation

    for cls in (Explanation, GuidedExplanation, TextExplanation, LMExplanation, GenerationExplanation, VLMExplanation,
                ClipExplanation, Seq2SeqExplanation, CoAttentionExplanation):
        assert issubclass(cls, Result), cls


def test_image_explanations(tiny_explainer, tiny_pixels):
    res = tiny_explainer.explain(tiny_pixels, method="complete")
    assert res.grid == (4, 4)
    values = [res.maps[b].flatten().tolist() for b in range(3)]
    names = [f"({r}, {c})" for r in range(4) for c in range(4)]
    check_result(res, item_values=values, item_names=[names] * 3, allowed=[list(range(16))] * 3,
                 method="complete", loss="logit", k=4)
    assert res.target_names and res.labels  # the image fields stay


def _lm(maps, lengths, tokens):
    batch = LMBatch([None] * len(lengths), torch.zeros(maps.shape, dtype=torch.long), torch.zeros(maps.shape),
                    torch.zeros(maps.shape, dtype=torch.long), lengths)
    return LMExplanation(maps, batch, tokens, torch.zeros(len(lengths), 4), torch.zeros(len(lengths), dtype=torch.long),
                         None, "complete", "logit")


def test_lm_padding_is_never_a_top_position():
    # prompt 0: 3 real tokens after 2 padding columns (0 there); all its scores below the padding's 0
    maps = torch.tensor([[0.0, 0.0, -3.0, -1.0, -2.0], [1.0, 2.0, 2.0, 0.5, -1.0]])
    res = _lm(maps, [3, 5], [["a", "b", "c"], ["v", "w", "x", "y", "z"]])
    assert res.grid is None
    check_result(res, item_values=[[-3.0, -1.0, -2.0], [1.0, 2.0, 2.0, 0.5, -1.0]],
                 item_names=[["a", "b", "c"], ["v", "w", "x", "y", "z"]], allowed=[[0, 1, 2], [0, 1, 2, 3, 4]],
                 method="complete", loss="logit")
    assert res.top(0, 3) == [(1, "b", -1.0), (2, "c", -2.0), (0, "a", -3.0)]
    assert res.top(1, 2) == [(1, "w", 2.0), (2, "x", 2.0)]  # a tie: the earlier position first
    assert res.top(1, 2, skip_first=True) == [(1, "w", 2.0), (2, "x", 2.0)]
    assert res.top(0, 5, skip_first=True) == [(1, "b", -1.0), (2, "c", -2.0)]
    assert [t for _, t, _ in res.top(1, 3)] == ["w", "x", "v"]  # still unpacks as (position, text, score)


def test_generation_rows_stop_before_the_nan_columns():
    nan = math.nan
    matrix = torch.tensor([[0.5, -1.0, nan], [0.5, 0.25, 2.0]])
    res = GenerationExplanation("p q", ["p", " q", " r", " s"], 2, matrix, "gae", "logit", torch.zeros(2, 4))
    assert res.maps is res.matrix
    check_result(res, item_values=[[0.5, -1.0], [0.5, 0.25, 2.0]], item_names=[["p", " q"], ["p", " q", " r"]],
                 allowed=[[0, 1], [0, 1, 2]], method="gae", loss="logit")
    assert math.isnan(float(res.normalized()[0, 2]))


def test_text_special_tokens_and_padding_are_never_top_positions():
    tokens = [["[CLS]", "a", "b", "[SEP]"], ["[CLS]", "c", "d", "e", "[SEP]", ]]
    content = torch.tensor([[False, True, True, False, False], [False, True, True, True, False]])
    encoded = Encoded(["a b", "c d e"], torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5), content, tokens,
                      [[None, 0, 1, None], [None, 0, 1, 2, None]], [[(0, 0)] * 4, [(0, 0)] * 5])
    maps = torch.tensor([[0.0, -2.0, -1.0, 0.0, 0.0], [0.0, 3.0, -4.0, 3.0, 0.0]])
    res = TextExplanation(maps, encoded, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), None, "gae", "logit",
                          "classification", ["x", "y", "z"])
    check_result(res, item_values=[[0.0, -2.0, -1.0, 0.0], [0.0, 3.0, -4.0, 3.0, 0.0]], item_names=tokens,
                 allowed=[[1, 2], [1, 2, 3]], method="gae", loss="logit")
    assert res.top(0, 4) == [(2, "b", -1.0), (1, "a", -2.0)]
    assert res.target_names == ["x", "x"]


def test_vlm_maps_are_the_image_grid_and_top_tokens_ranks_the_words():
    maps = torch.tensor([[[1.0, -4.0, 2.0], [2.0, 0.0, 0.5]], [[0.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])
    text = torch.tensor([[0.0, 0.0, 0.7, -0.2], [0.0, 0.3, 0.0, 0.9]])
    res = VLMExplanation(maps, text, [["<image>", "what", "is"], ["what", "<image>", "this"]], [3, 3],
                         torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), None, "complete", "logit", "default",
                         ["x", "x"])
    assert res.grid == (2, 3)
    check_result(res, item_values=[maps[b].flatten().tolist() for b in range(2)], item_names=[GRID_2x3] * 2,
                 allowed=[list(range(6))] * 2, method="complete", loss="logit")
    assert res.top(0, 2) == [(2, "(0, 2)", 2.0), (3, "(1, 0)", 2.0)]
    spots = res.top_tokens(1, 2)  # the prompt's words, image tokens left out; position = index in tokens[1]
    assert [(p, t) for p, t, _ in spots] == [(2, "this"), (0, "what")]
    assert [s for _, _, s in spots] == pytest.approx([0.9, 0.3])


def _text_batch(tokens, content):
    n = content.shape[1]
    return TextBatch([" ".join(t) for t in tokens], torch.zeros(len(tokens), n, dtype=torch.long),
                     torch.ones(len(tokens), n), content, tokens, [[None] * len(t) for t in tokens],
                     [[(0, 0)] * len(t) for t in tokens], torch.zeros(len(tokens), dtype=torch.long))


def test_clip_image_tower_reads_one_text_per_call():
    maps = torch.tensor([[[[1.0, 2.0, 3.0], [0.0, -1.0, 3.0]], [[-5.0, 0.0, 1.0], [1.0, 1.0, 1.0]]]])  # (1, 2, 2, 3)
    batch = _text_batch([["<s>", "x", "</s>"], ["<s>", "y", "</s>"]], torch.tensor([[0, 1, 0], [0, 1, 0]]).bool())
    res = ClipExplanation(maps, torch.zeros(1, 2), "image", "complete", "logit", ["x", "y"], batch, [], "tiny", False)
    assert res.grid == (2, 3)
    per_pair = maps / torch.tensor([[3.0, 5.0]])[..., None, None]  # CLIP keeps its per-(image, text) normalisation
    for k in range(2):
        check_result(res, item_values=[maps[0, k].flatten().tolist()], item_names=[GRID_2x3],
                     allowed=[list(range(6))], method="complete", loss="logit", normalized=per_pair, text=k)
    assert res.top(0, 2) == res.top(0, 2, text=0) == [(2, "(0, 2)", 3.0), (5, "(1, 2)", 3.0)]


def test_clip_text_tower_never_lists_special_tokens_or_padding():
    tokens = [["<s>", "a", "b", "</s>"], ["<s>", "c", "</s>"]]
    content = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]]).bool()
    maps = torch.tensor([[[0.0, -1.0, -3.0, 0.0], [0.0, -2.0, 0.0, 0.0]]])  # (1 image, 2 texts, 4 tokens)
    res = ClipExplanation(maps, torch.zeros(1, 2), "text", "gae", "logit", ["a b", "c"], _text_batch(tokens, content),
                          [], "tiny", False)
    assert res.grid is None
    assert res.top(0, 5, text=0) == [(1, "a", -1.0), (2, "b", -3.0)]
    assert res.top(0, 5, text=1) == [(1, "c", -2.0)]
    assert [tuple(s) for s in res.top(0, 1, text=0)] == [(1, "a", -1.0)]


def test_seq2seq_maps_are_the_source_row():
    source = Side(["a b", "c"], [["a", "b", "</s>"], ["c", "</s>"]], [[False, False, True], [False, True]],
                  [[0, 1, None], [0, None]], [[(0, 1), (2, 3), (0, 0)], [(0, 1), (0, 0)]])
    decoder = Side(["x y", "z"], [["<s>", "x", "y"], ["<s>", "z"]], [[True, False, False], [True, False]],
                   [[None, 0, 1], [None, 0]], [[(0, 0), (0, 1), (2, 3)], [(0, 0), (0, 1)]])
    zeros = torch.zeros(2, 3, dtype=torch.long)
    batch = PairBatch(zeros, zeros, zeros, zeros, torch.tensor([1, 1]), torch.tensor([-1, -1]), source, decoder)
    src = torch.tensor([[-1.0, -0.5, 2.0], [-3.0, -2.0, 0.0]])  # pair 1: one source token of padding (0)
    tgt = torch.tensor([[0.5, 1.0, 0.0], [0.25, 0.75, 0.0]])
    res = Seq2SeqExplanation(src, tgt, batch, torch.tensor([5, 6]), ["y", "z"], torch.zeros(2), "complete", "logit",
                             True)
    assert res.maps is res.source_scores
    check_result(res, item_values=[[-1.0, -0.5, 2.0], [-3.0, -2.0]], item_names=source.tokens,
                 allowed=[[0, 1, 2], [0, 1]], method="complete", loss="logit")
    # the decoder side: nothing after the explained position (1) is listed
    check_result(res, item_values=[[0.5, 1.0, 0.0], [0.25, 0.75]], item_names=decoder.tokens,
                 allowed=[[0, 1], [0, 1]], method="complete", loss="logit", side="target")
    with pytest.raises(attngrad.AttngradError, match="side"):
        res.top(0, side="decoder")
    assert res.targets == ["x y", "z"] and res.positions == [1, 1]  # the family's own fields stay


def test_coattention_maps_are_the_regions():
    regions = torch.tensor([[-1.0, -2.0, 0.0], [0.5, 0.5, 4.0]])  # question 0: its third region is padding
    res = CoAttentionExplanation(torch.zeros(2, 2), regions, torch.tensor([0, 1]), torch.zeros(2), "complete",
                                 "logit", True, torch.ones(2, 2).bool(), torch.tensor([[1, 1, 0], [1, 1, 1]]).bool())
    names = ["region 0", "region 1", "region 2"]
    check_result(res, item_values=regions.tolist(), item_names=[names] * 2, allowed=[[0, 1], [0, 1, 2]],
                 method="complete", loss="logit")
    legacy = CoAttentionExplanation(torch.zeros(1, 2), regions[:1], torch.tensor([0]), torch.zeros(1), "gae", "logit",
                                    True)  # built without masks: every region counts
    assert [s.position for s in legacy.top(0, 3)] == [2, 0, 1]


def test_a_nan_score_is_never_a_top_position():
    """torch sorts NaN first; a degenerate row's NaN must not come back as the best position."""
    maps = torch.tensor([[[1.0, float("nan"), 2.0], [0.5, float("nan"), -1.0]]])
    res = VLMExplanation(maps, torch.zeros(1, 2), [["a", "b"]], [2], torch.zeros(1, 5), torch.zeros(1, dtype=torch.long),
                         None, "complete", "logit", "language", ["x"])
    assert res.top(0, 3) == [(2, "(0, 2)", 2.0), (0, "(0, 0)", 1.0), (3, "(1, 0)", 0.5)]
    assert [s.position for s in res.top(0, 10)] == [2, 0, 3, 5]
