"""The relevance rules of Chefer et al. (ICCV 2021) on tiny random BART, T5 and Marian, checked against an
independent computation written here from the equations: explicit loops over layers, heads and rows,
one pair at a time, on the model's own maps and gradients (not via attngrad's code)."""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.seq2seq import Seq2SeqExplainer, rules

SOURCES = ["the cat sat on the mat", "a dog ran in the park and my car is red", "my car"]
TARGETS = ["die katze sass auf der matte", "ein hund lief", "mein auto ist rot"]
POSITIONS = [2, 1, 3]


def _weighted(attn: torch.Tensor, grad: torch.Tensor, method: str) -> torch.Tensor:
    """``E_H(w ⊙ A)`` with a loop over heads (method.md's table)."""
    heads = attn.shape[0]
    total = torch.zeros_like(attn[0])
    for h in range(heads):
        if method == "complete":
            total = total + grad[h] * attn[h]
        elif method == "gae":
            total = total + torch.clamp(grad[h] * attn[h], min=0)
        elif method == "absolute":
            total = total + grad[h].abs() * attn[h]
        elif method == "rollout":
            total = total + attn[h]
    return total / heads


def _normalized(r: torch.Tensor) -> torch.Tensor:
    """Eqs. 8-9, row by row: ``(R - I)`` divided by the sum of its row's absolute values, plus ``I``."""
    eye = torch.eye(r.shape[0], dtype=r.dtype)
    hat = r - eye
    out = torch.zeros_like(hat)
    for i in range(hat.shape[0]):
        s = sum(abs(float(v)) for v in hat[i])
        if s != 0:
            out[i] = hat[i] / s
    return out + eye


def reference(model, source_ids: list[int], decoder_ids: list[int], token: int, method: str, normalize=True):
    """R^{ts} and R^{tt} - I at the last decoder position, for one unpadded pair."""
    out = model(input_ids=torch.tensor([source_ids]), decoder_input_ids=torch.tensor([decoder_ids]),
                output_attentions=True, use_cache=False)
    p = len(decoder_ids) - 1
    enc, dec, cross = out.encoder_attentions, out.decoder_attentions, out.cross_attentions
    grads = torch.autograd.grad(out.logits[0, p, token], list(enc) + list(dec) + list(cross))
    g_enc, g_dec, g_cross = grads[: len(enc)], grads[len(enc): len(enc) + len(dec)], grads[len(enc) + len(dec):]
    n_s, n_t = len(source_ids), len(decoder_ids)
    r_ss, r_tt = torch.eye(n_s, dtype=torch.float64), torch.eye(n_t, dtype=torch.float64)
    r_ts, r_st = torch.zeros(n_t, n_s, dtype=torch.float64), torch.zeros(n_s, n_t, dtype=torch.float64)
    for layer in range(len(enc)):  # eqs. 6-7 on the encoder
        a = _weighted(enc[layer][0].detach(), g_enc[layer][0], method)
        r_ss, r_st = r_ss + a @ r_ss, r_st + a @ r_st
    for layer in range(len(dec)):
        a = _weighted(dec[layer][0].detach(), g_dec[layer][0], method)  # eqs. 6-7 on the decoder
        r_tt, r_ts = r_tt + a @ r_tt, r_ts + a @ r_ts
        c = _weighted(cross[layer][0].detach(), g_cross[layer][0], method)  # eqs. 10-11
        bar_tt = _normalized(r_tt) if normalize else r_tt
        bar_ss = _normalized(r_ss) if normalize else r_ss
        r_ts, r_tt = r_ts + bar_tt.T @ c @ bar_ss, r_tt + c @ r_st
    return r_ts[p], (r_tt - torch.eye(n_t, dtype=torch.float64))[p]


def _ids(tokenizer, text, target=False):
    return (tokenizer(text_target=text) if target else tokenizer(text))["input_ids"]


def _check(explainer, model, tokenizer, method, normalize=True):
    res = explainer.explain(SOURCES, TARGETS, method=method, position=POSITIONS)
    start = explainer.adapter.start
    for i, (s, t, k) in enumerate(zip(SOURCES, TARGETS, POSITIONS)):
        src, labels = _ids(tokenizer, s), _ids(tokenizer, t, target=True)
        want_s, want_t = reference(model, src, [start] + labels[:k], labels[k], method, normalize)
        assert int(res.tokens[i]) == labels[k]
        got_s = res.source_scores[i, : len(src)]
        got_t = res.target_scores[i, : k + 1]
        scale = max(want_s.abs().max(), want_t.abs().max())
        assert scale > 1e-6  # a real signal, not zeros on both sides
        torch.testing.assert_close(got_s, want_s, rtol=1e-6, atol=1e-9 * scale)
        torch.testing.assert_close(got_t, want_t, rtol=1e-6, atol=1e-9 * scale)
        assert (res.source_scores[i, len(src):] == 0).all() and (res.target_scores[i, k + 1:] == 0).all()


@pytest.mark.parametrize("method", ["complete", "gae", "absolute", "rollout"])
def test_rules_match_the_independent_computation(seq2seq, method):
    _kind, model, tokenizer = seq2seq
    _check(Seq2SeqExplainer(model, tokenizer), model, tokenizer, method)


def test_without_normalisation(seq2seq):
    _kind, model, tokenizer = seq2seq
    _check(Seq2SeqExplainer(model, tokenizer, normalize=False), model, tokenizer, "complete", normalize=False)


def test_complete_is_signed_and_gae_is_not(seq2seq):
    _kind, model, tokenizer = seq2seq
    res = Seq2SeqExplainer(model, tokenizer).explain_methods(SOURCES, TARGETS, ["complete", "gae"], position=POSITIONS)
    assert (res["complete"].source_scores < 0).any() and (res["complete"].source_scores > 0).any()
    assert (res["gae"].source_scores >= 0).all()
    assert res["complete"].signed and not res["gae"].signed


# Mutants: each deliberately broken rule must make the comparison above fail.
def _broken_normalisation(r):
    return r


def _row_sum_normalisation(r):  # Chefer's plain row sum: differs from ours only for signed maps
    eye = torch.eye(r.shape[-1], dtype=r.dtype).expand_as(r)
    return (r - eye) / (r - eye).sum(-1, keepdim=True) + eye


def _no_transpose_cross(self, *layers):
    old = dict(self.maps)
    for x, y, mix in layers:
        rxx, ryy = rules.normalize_self(old[x, x]), rules.normalize_self(old[y, y])
        self.maps[x, y] = self.maps[x, y] + torch.bmm(rxx, torch.bmm(mix, ryy))


def _no_self_update_of_cross(self, x, mix):
    self.maps[x, x] = self.maps[x, x] + torch.bmm(mix, self.maps[x, x])


@pytest.mark.parametrize("target,replacement,method", [
    ("normalize_self", _broken_normalisation, "gae"),
    ("normalize_self", _row_sum_normalisation, "complete"),
    ("Relevance.cross_attention", _no_transpose_cross, "gae"),
    ("Relevance.self_attention", _no_self_update_of_cross, "complete"),
    ("WEIGHTINGS", {**rules.WEIGHTINGS, "gae": rules.WEIGHTINGS["complete"]}, "gae"),
])
def test_a_broken_rule_is_caught(monkeypatch, target, replacement, method):
    from .conftest import make_model

    model, tokenizer = make_model("bart")
    if "." in target:
        cls, attr = target.split(".")
        monkeypatch.setattr(getattr(rules, cls), attr, replacement)
    elif target == "WEIGHTINGS":
        monkeypatch.setattr(rules, "WEIGHTINGS", replacement)
    else:
        monkeypatch.setattr(rules, target, replacement)
    with pytest.raises((AssertionError, AttngradError)):  # a wrong map, or one refused for being NaN
        _check(Seq2SeqExplainer(model, tokenizer), model, tokenizer, method)
