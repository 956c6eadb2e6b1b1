"""Relevance rules for self- and cross-attention (Chefer, Gur & Wolf, ICCV 2021, eqs. 6-11).

"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers" keeps one relevance matrix per pair of sources, ``R^{xy}`` (rows: tokens of x,
columns: tokens of y), starting from ``R^{xx} = I`` and ``R^{xy} = 0``. Each attention layer,
with ``Abar = E_H(w ⊙ A)`` (``w`` the weighting: ``gae`` is theirs, ``complete`` and
``absolute`` are Cui, Fan & Chen's, method.md), updates them:

- self-attention of source q (eqs. 6-7): ``R^{qq} += Abar · R^{qq}``, and for every other
  source k ``R^{qk} += Abar · R^{qk}``;
- cross-attention from q (queries) to k (keys) (eqs. 10-11):
  ``R^{qk} += (Rbar^{qq})^T · Abar · Rbar^{kk}`` and ``R^{qq} += Abar · R^{kq}``,
  where ``Rbar^{xx} = Rhat^{xx} + I`` and ``Rhat^{xx}`` is ``R^{xx} - I`` with each row divided
  by its sum (eqs. 8-9).

The normalisation divides by a row sum, which for the signed ``complete`` weighting can be 0
or negative; here every weighting divides by the row's sum of absolute values, which equals
the sum for ``gae`` and ``absolute`` (non-negative) and keeps each entry's sign for
``complete``. A row that is all zero stays zero. The transpose in eq. 10 is written as in
the paper, and as the authors' code computes it (``Transformer-MM-Explainability``,
``DETR/modules/ExplanationGenerator.py``: ``apply_self_attention_rules``,
``apply_mm_attention_rules``, ``handle_residual``); their code sets the NaN of an all-zero row
to 0 after the product instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..methods.rollout import (
    absolute_gradient,
    plain,
    positive_gradient,
    signed_gradient,
)

WEIGHTINGS: dict[str, Callable] = {
    "complete": signed_gradient,
    "gae": positive_gradient,
    "absolute": absolute_gradient,
    "rollout": plain,
}


def head_mean(attn: torch.Tensor, grad: torch.Tensor | None, weighting: str) -> torch.Tensor:
    """``Abar = E_H(w ⊙ A)`` (B, Q, K) for a weighting name."""
    if weighting not in WEIGHTINGS:
        from ..errors import AttngradError

        raise AttngradError(f"weighting {weighting!r} is unknown; use one of {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[weighting](attn, grad).mean(dim=1)


def normalized_self(r: torch.Tensor) -> torch.Tensor:
    """``Rbar = Rhat + I`` with ``Rhat`` = ``R - I``, each row divided by its sum of absolute values (eqs. 8-9)."""
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    hat = r - eye
    total = hat.abs().sum(dim=-1, keepdim=True)
    hat = torch.where(total > 0, hat / total.clamp(min=torch.finfo(r.dtype).tiny), torch.zeros_like(hat))
    return hat + eye


class Relevance:
    """The relevance matrices ``R^{xy}`` of a batch, for named sources of given lengths.

    Args:
        lengths: ``{source: number of tokens}`` (e.g. ``{"source": S, "target": T}``).
        batch: batch size; ``dtype``, ``device``: of the matrices.
    """

    def __init__(self, lengths: dict[str, int], batch: int, dtype=torch.float32, device=None):
        self.r: dict[tuple[str, str], torch.Tensor] = {}
        for x, nx in lengths.items():
            for y, ny in lengths.items():
                m = torch.zeros(batch, nx, ny, dtype=dtype, device=device)
                if x == y:
                    m = m + torch.eye(nx, dtype=dtype, device=device)
                self.r[x, y] = m

    def self_attention(self, q: str, abar: torch.Tensor) -> None:
        """Eqs. 6-7: ``R^{qk} += Abar · R^{qk}`` for every source k (k = q included)."""
        for (x, y), m in list(self.r.items()):
            if x == q:
                self.r[x, y] = m + torch.bmm(abar, m)

    def cross_attention(self, q: str, k: str, abar: torch.Tensor) -> None:
        """Eqs. 10-11 for queries of ``q`` attending keys of ``k`` (``abar``: (B, |q|, |k|))."""
        r_qq, r_kk, r_kq = self.r[q, q], self.r[k, k], self.r[k, q]
        add_qk = torch.bmm(torch.bmm(normalized_self(r_qq).transpose(1, 2), abar), normalized_self(r_kk))
        add_qq = torch.bmm(abar, r_kq)
        self.r[q, k] = self.r[q, k] + add_qk
        self.r[q, q] = r_qq + add_qq
