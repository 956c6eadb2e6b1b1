"""LXMERT (co-attention) on a tiny random LxmertForQuestionAnswering: the recorded maps are the model's,
and the explanation equals the rules written out with loops (tests/seq2seq/test_relevance.py's reference)."""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.seq2seq.coattention import CoAttentionExplainer, _recording

from .test_relevance import _reference
from .test_rules import _weighted

N_T, N_I = 6, 4


@pytest.fixture(scope="module")
def lxmert():
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    torch.manual_seed(0)
    config = LxmertConfig(vocab_size=30, hidden_size=16, num_attention_heads=2, intermediate_size=32, l_layers=2,
                          x_layers=2, r_layers=1, visual_feat_dim=8, visual_pos_dim=4, num_qa_labels=5,
                          initializer_range=0.3, max_position_embeddings=16)
    return LxmertForQuestionAnswering(config).double().eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 30, (3, N_T), generator=g)
    ids[:, 0] = 1
    feats = torch.randn(3, N_I, 8, generator=g, dtype=torch.float64)
    boxes = torch.rand(3, N_I, 4, generator=g, dtype=torch.float64)
    return ids, feats, boxes


def test_recorded_maps_are_the_models(lxmert, inputs):
    ids, feats, boxes = inputs
    with _recording(lxmert) as records:
        lxmert(input_ids=ids, visual_feats=feats, visual_pos=boxes)
    with torch.no_grad():
        out = lxmert(input_ids=ids, visual_feats=feats, visual_pos=boxes, output_attentions=True)
    kinds = [(x, y) for x, y, _ in records]
    assert kinds == [("t", "t")] * 2 + [("i", "i")] + [("t", "i"), ("i", "t"), ("t", "t"), ("i", "i")] * 2
    torch.testing.assert_close(records[0][2], out.language_attentions[0])
    torch.testing.assert_close(records[2][2], out.vision_attentions[0])
    torch.testing.assert_close(records[3][2], out.cross_encoder_attentions[0])
    torch.testing.assert_close(records[7][2], out.cross_encoder_attentions[1])
    assert records[4][2].shape == (3, 2, N_I, N_T)
    assert "forward" not in vars(lxmert.lxmert.encoder.x_layers[0].visual_attention.att)  # unwrapped afterwards


@pytest.mark.parametrize("method", ["complete", "gae"])
def test_lxmert_maps_match_the_equations(lxmert, inputs, method):
    ids, feats, boxes = inputs
    res = CoAttentionExplainer(lxmert).explain(ids, feats, boxes, method=method)
    for b in range(3):
        with _recording(lxmert) as records:
            logits = lxmert(input_ids=ids[b:b + 1], visual_feats=feats[b:b + 1], visual_pos=boxes[b:b + 1])
        answer = int(logits.question_answering_score[0].argmax())
        assert answer == int(res.targets[b])
        grads = torch.autograd.grad(logits.question_answering_score[0, answer], [r[2] for r in records],
                                    allow_unused=True)
        steps, pending = [], []
        for (x, y, attn), grad in zip(records, grads):
            grad = torch.zeros_like(attn) if grad is None else grad  # the last region -> language map is unused
            mix = _weighted(attn[0].detach(), grad[0], method)
            if x == y:
                steps.append(("self", (x, mix)))
            else:
                pending.append(mix)
                if len(pending) == 2:
                    steps.append(("co", tuple(pending)))
                    pending = []
        want = _reference(steps, N_T, N_I)
        text = want["t", "t"][0] - torch.eye(N_T, dtype=torch.float64)[0]
        torch.testing.assert_close(res.text_scores[b], text, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(res.region_scores[b], want["t", "i"][0], rtol=1e-8, atol=1e-12)
        assert res.region_scores[b].abs().max() > 1e-6


def test_padded_text_equals_unpadded(lxmert, inputs):
    ids, feats, boxes = inputs
    ex = CoAttentionExplainer(lxmert)
    short = ex.explain(ids[:1, :4], feats[:1], boxes[:1])
    padded_ids = ids[:1].clone()
    padded_ids[0, 4:] = 0
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    padded = ex.explain(padded_ids, feats[:1], boxes[:1], attention_mask=mask)
    torch.testing.assert_close(padded.text_scores[0, :4], short.text_scores[0], rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(padded.region_scores, short.region_scores, rtol=1e-6, atol=1e-10)
    assert (padded.text_scores[0, 4:] == 0).all()


def test_not_lxmert_is_refused():
    with pytest.raises(AttngradError, match="not an LxmertForQuestionAnswering"):
        CoAttentionExplainer(torch.nn.Linear(2, 2))


def test_lxmert_adapter_is_a_model_adapter(lxmert, inputs):
    from attngrad.models.base import ModelAdapter
    from attngrad.seq2seq.coattention import LxmertAdapter

    ids, feats, boxes = inputs
    adapter = LxmertAdapter(lxmert)
    assert isinstance(adapter, ModelAdapter)
    out = adapter.forward(ids, feats, boxes, attention_mask=torch.ones_like(ids),
                          visual_attention_mask=torch.ones(3, N_I, dtype=feats.dtype))
    assert adapter.num_layers == len(out.attentions) == 2 + 1 + 4 * 2
    assert out.sources == [("t", "t")] * 2 + [("i", "i")] + [("t", "i"), ("i", "t"), ("t", "t"), ("i", "i")] * 2
    assert all(a.requires_grad for a in out.attentions)
    torch.testing.assert_close(out.logits, lxmert(input_ids=ids, visual_feats=feats, visual_pos=boxes).question_answering_score)
    assert adapter.labels == [f"answer {i}" for i in range(5)] and adapter.special_tokens == {"cls": 0}
    with pytest.raises(AttngradError, match="not supported for LXMERT"):
        adapter.override_attention(out.attentions)
