"""Chefer et al.'s encoder-decoder rules against loops, on tiny random BART, T5 and Marian configs.

The reference takes ONE source (unpadded), Hugging Face's own attention maps and autograd
gradients of the explained token's logit, and applies eqs. 6-11 by loops over layers, heads
and rows (the row normalisation of eqs. 8-9 written row by row).
"""

from __future__ import annotations

import pytest
import torch

from attngrad import AttngradError
from attngrad.crossattn import Seq2SeqExplainer

W = {
    "complete": lambda a, g: g * a,
    "gae": lambda a, g: (g * a).clamp(min=0),
    "absolute": lambda a, g: g.abs() * a,
    "rollout": lambda a, g: a,
}


def _bart():
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, init_std=0.3)
    return BartForConditionalGeneration(cfg)


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, initializer_factor=3.0)
    return T5ForConditionalGeneration(cfg)


def _marian():
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                       pad_token_id=39, eos_token_id=0, decoder_start_token_id=39, init_std=0.3)
    return MarianMTModel(cfg)


@pytest.fixture(scope="module", params=["bart", "t5", "marian"])
def model(request):
    torch.manual_seed(0)
    m = {"bart": _bart, "t5": _t5, "marian": _marian}[request.param]().double().eval()
    m.set_attn_implementation("eager")
    return m


def _norm(r):
    n = r.shape[0]
    hat = r - torch.eye(n, dtype=r.dtype)
    for i in range(n):
        s = sum(abs(float(x)) for x in hat[i])
        if s > 0:
            hat[i] = hat[i] / s
    return hat + torch.eye(n, dtype=r.dtype)


def _abar(a, g, weighting):
    total = torch.zeros(a.shape[-2:], dtype=a.dtype)
    for h in range(a.shape[0]):
        total += W[weighting](a[h], g[h]) / a.shape[0]
    return total


def reference(model, src, dec, pos, weighting):
    out = model(input_ids=src[None], decoder_input_ids=dec[None], output_attentions=True)
    token = out.logits[0, pos].argmax()
    maps = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
    grads = torch.autograd.grad(out.logits[0, pos, token], maps)
    le, ld = len(out.encoder_attentions), len(out.decoder_attentions)
    s, t = src.shape[0], dec.shape[0]
    r_ss, r_tt = torch.eye(s, dtype=torch.float64), torch.eye(t, dtype=torch.float64)
    r_ts, r_st = torch.zeros(t, s, dtype=torch.float64), torch.zeros(s, t, dtype=torch.float64)
    for l in range(le):
        r_ss = r_ss + _abar(maps[l][0].detach(), grads[l][0], weighting) @ r_ss
    for l in range(ld):
        a = _abar(maps[le + l][0].detach(), grads[le + l][0], weighting)
        r_tt, r_ts = r_tt + a @ r_tt, r_ts + a @ r_ts
        c = _abar(maps[le + ld + l][0].detach(), grads[le + ld + l][0], weighting)
        r_ts = r_ts + _norm(r_tt).T @ c @ _norm(r_ss)
        r_tt = r_tt + c @ r_st
    return r_ts[pos], r_tt[pos], int(token)


@pytest.mark.parametrize("weighting", ["complete", "gae", "absolute", "rollout"])
def test_rules_match_loops_and_batching(model, weighting):
    gen = torch.Generator().manual_seed(5)
    pad = model.config.pad_token_id
    lengths = [7, 5]
    src = torch.full((2, 7), pad, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, 39, (n,), generator=gen)
    mask = (src != pad).long()
    dec = torch.randint(3, 39, (2, 4), generator=gen)
    dec[:, 0] = model.config.decoder_start_token_id
    res = Seq2SeqExplainer(model).explain(src, dec, attention_mask=mask, position=2, weighting=weighting)
    for i, n in enumerate(lengths):
        want_s, want_t, token = reference(model, src[i, :n], dec[i], 2, weighting)
        assert int(res.tokens[i]) == token
        torch.testing.assert_close(res.source[i, :n], want_s, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(res.target[i], want_t, rtol=1e-6, atol=1e-9)
        assert res.source[i, n:].abs().max() == 0 if n < 7 else True
    assert res.source.abs().max() > 0


def test_non_encoder_decoder_refused():
    from transformers import BertConfig, BertModel

    with pytest.raises(AttngradError, match="encoder-decoder"):
        Seq2SeqExplainer(BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=32)))
