"""The generic rules on their own: a bi-modal co-attention stack (LXMERT's order) on random weighted maps,
against the equations written out with explicit loops (eq. 11, which an encoder-decoder leaves at 0, included)."""

from __future__ import annotations

import pytest
import torch

from attngrad.seq2seq import Relevance, head_mix, normalize_self, rules


def _matmul(a, b):
    out = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = sum(a[i, k] * b[k, j] for k in range(a.shape[1]))
    return out


def _bar(r):
    """Eqs. 8-9 with loops: (R - I) row-normalised by the sum of absolute values, + I."""
    n = r.shape[0]
    out = r.clone()
    for i in range(n):
        out[i, i] -= 1
        total = sum(abs(out[i, j]) for j in range(n))
        for j in range(n):
            out[i, j] = out[i, j] / total if total != 0 else 0.0
        out[i, i] += 1
    return out


def _reference(steps, n_t, n_i):
    r = {("t", "t"): torch.eye(n_t, dtype=torch.float64), ("i", "i"): torch.eye(n_i, dtype=torch.float64),
         ("t", "i"): torch.zeros(n_t, n_i, dtype=torch.float64), ("i", "t"): torch.zeros(n_i, n_t, dtype=torch.float64)}
    for kind, payload in steps:
        if kind == "self":
            x, a = payload
            other = "i" if x == "t" else "t"
            r[x, x], r[x, other] = r[x, x] + _matmul(a, r[x, x]), r[x, other] + _matmul(a, r[x, other])
        else:  # co-attention: both directions from the maps before the layer
            (a_ti, a_it) = payload
            add_ti = _matmul(_matmul(_bar(r["t", "t"]).T, a_ti), _bar(r["i", "i"]))  # eq. 10
            add_tt = _matmul(a_ti, r["i", "t"])  # eq. 11
            add_it = _matmul(_matmul(_bar(r["i", "i"]).T, a_it), _bar(r["t", "t"]))
            add_ii = _matmul(a_it, r["t", "i"])
            r["t", "i"], r["t", "t"] = r["t", "i"] + add_ti, r["t", "t"] + add_tt
            r["i", "t"], r["i", "i"] = r["i", "t"] + add_it, r["i", "i"] + add_ii
    return r


def _steps(seed, n_t=4, n_i=3, signed=True):
    g = torch.Generator().manual_seed(seed)

    def mix(n, m):
        attn = torch.softmax(torch.randn(2, 2, n, m, generator=g, dtype=torch.float64), dim=-1)
        grad = torch.randn(2, 2, n, m, generator=g, dtype=torch.float64)
        return head_mix(attn, grad, rules.WEIGHTINGS["complete" if signed else "gae"])

    steps = [("self", ("t", mix(n_t, n_t))), ("self", ("i", mix(n_i, n_i)))]
    for _ in range(2):
        steps += [("co", (mix(n_t, n_i), mix(n_i, n_t))), ("self", ("t", mix(n_t, n_t))), ("self", ("i", mix(n_i, n_i)))]
    return steps


@pytest.mark.parametrize("signed", [True, False])
def test_co_attention_stack_matches_the_equations(signed):
    steps = _steps(0, signed=signed)
    rel = Relevance({"t": 4, "i": 3}, 2, torch.zeros(1, dtype=torch.float64))
    for kind, payload in steps:
        if kind == "self":
            rel.self_attention(*payload)
        else:
            rel.cross_attention(("t", "i", payload[0]), ("i", "t", payload[1]))
    for b in range(2):
        want = _reference([(k, tuple((p[b] if isinstance(p, torch.Tensor) else p) for p in pl)) for k, pl in steps], 4, 3)
        for pair, value in want.items():
            torch.testing.assert_close(rel[pair][b], value, rtol=1e-10, atol=1e-12)
    assert rel["t", "t"].abs().sum() > 0 and (rel["i", "t"] != 0).any()


def test_normalisation_is_chefers_for_non_negative_maps():
    """For maps >= I (gae, absolute, rollout) the absolute-value row sum is the plain row sum of the authors' code."""
    g = torch.Generator().manual_seed(3)
    r = torch.eye(5, dtype=torch.float64) + torch.rand(2, 5, 5, generator=g, dtype=torch.float64)
    hat = r - torch.eye(5, dtype=torch.float64)
    expected = hat / hat.sum(-1, keepdim=True) + torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(normalize_self(r), expected)
    rows = normalize_self(r) - torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 5, dtype=torch.float64))


def test_an_all_zero_row_stays_zero():
    r = torch.eye(3, dtype=torch.float64).repeat(1, 1, 1)
    r[0, 1, 0] = 2.0
    out = normalize_self(r)
    assert torch.equal(out[0, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(out[0, 1], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))


def test_shapes_are_checked():
    rel = Relevance({"t": 4, "i": 3}, 1, torch.zeros(1))
    with pytest.raises(ValueError, match="sizes"):
        rel.self_attention("t", torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="two different sources"):
        rel.cross_attention(("t", "t", torch.zeros(1, 4, 4)))
