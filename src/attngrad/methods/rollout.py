"""One rollout engine, many weightings: rollout, GAE, complete (the paper's method), absolute.

For each layer, ``Abar(l) = I + E_H(w(l) ⊙ A(l))``; the explanation is the read
token's row of ``Abar(L) · … · Abar(1)`` at the patch columns
(Cui, Fan & Chen, eqs. 1, 4, 5, 6; method.md, "The family of attention x gradient rollouts").
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ._common import check_layer, gradients
from .base import Method, Trace, register

#: ``w ⊙ A`` per head from ``(A, grad A)``: the gradient weightings take the gradient, ``plain`` ignores it
#: (``None`` when the trace has none). :meth:`Rollout.token_scores` refuses a trace without the
#: gradients a method needs, before any weighting is called.
Weighting = Callable[[torch.Tensor, Any], torch.Tensor]


def rollout(mixes: Sequence[torch.Tensor], token: int | slice, renormalize: bool = False) -> torch.Tensor:
    """Row ``token`` of ``prod_l (I + M_l)`` for layers last to first; ``mixes[l]`` is (B, N, N).

    Computed as a row vector from the last layer down (``v <- v · Abar(l)``), which is the
    same row as the full matrix product of eq. 1 at O(L·N²) instead of O(L·N³) per image.

    Args:
        mixes: per layer, the head-averaged weighted attention ``E_H(w ⊙ A)``, first layer first.
        token: the row read (0 = CLS); a slice reads the sum of those rows (text models with
            mean pooling read every real token's row, see :mod:`attngrad.text`).
        renormalize: divide each row of ``I + M`` by its sum (Abnar & Zuidema's
            implementation); ``False`` is the paper's eq. 1 and GAE's ``R <- R + Abar·R``.

    Returns:
        (B, N) scores over all tokens.
    """
    batch, n, _ = mixes[0].shape
    row = torch.zeros(batch, 1, n, dtype=mixes[0].dtype, device=mixes[0].device)
    row[:, 0, token] = 1.0
    eye = torch.eye(n, dtype=row.dtype, device=row.device)
    for mix in reversed(mixes):
        abar = mix + eye
        if renormalize:
            abar = abar / abar.sum(dim=-1, keepdim=True)
        row = torch.bmm(row, abar)
    return row[:, 0]


def plain(attn: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``w = 1``: attention alone (eq. 1)."""
    return attn


def positive_gradient(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``max(grad A ⊙ A, 0)`` per head, before the head mean (GAE, eq. 4)."""
    return (grad * attn).clamp(min=0)


def signed_gradient(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad A ⊙ A``, sign kept: the paper's complete attention (eq. 5)."""
    return grad * attn


def absolute_gradient(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``|grad A| ⊙ A`` (eq. 6)."""
    return grad.abs() * attn


class Rollout(Method):
    """A member of the attention x gradient rollout family, defined by its weighting.

    Args:
        start_layer: first layer included in the product (0 = all layers).
        renormalize: row-normalise ``I + M`` in every layer (see :func:`rollout`).
    """

    weighting: Weighting = staticmethod(plain)
    default_renormalize = False

    def __init__(self, *, start_layer: int = 0, renormalize: bool | None = None):
        self.start_layer = start_layer
        self.renormalize = self.default_renormalize if renormalize is None else renormalize

    def first_layer(self, trace: Trace) -> int:
        """``start_layer``, checked against the trace's model (:func:`._common.check_layer`)."""
        check_layer(self.name, self.start_layer, len(trace.attentions))
        return self.start_layer

    def token_scores(self, trace: Trace) -> torch.Tensor:
        start = self.first_layer(trace)
        # a gradient weighting is given the gradients (refused when the trace has none); ``plain`` None
        grads: Sequence[torch.Tensor | None] = (
            gradients(trace, self.name) if self.needs_gradients else [None] * len(trace.attentions)
        )
        pairs = zip(trace.attentions[start:], grads[start:])
        mixes = [self.weighting(a, g).mean(dim=1) for a, g in pairs]
        return rollout(mixes, trace.token, self.renormalize)


@register
class Complete(Rollout):
    """Complete attention x gradient (Cui, Fan & Chen, eq. 5), the paper's method: signed map."""

    name = "complete"
    description = "the paper's complete attention x gradient (eq. 5): signed, red supports, blue opposes"
    signed = True
    weighting = staticmethod(signed_gradient)


@register
class GAE(Rollout):
    """Generic Attention-model Explainability (Chefer et al., ICCV 2021): positive gradient (eq. 4)."""

    name = "gae"
    description = "GAE (Chefer et al., ICCV 2021): rollout of the positive part of gradient x attention"
    weighting = staticmethod(positive_gradient)


@register
class Absolute(Rollout):
    """Absolute gradient (eq. 6): where the encoder looks, regardless of the classifier's direction."""

    name = "absolute"
    description = "absolute gradient x attention (eq. 6): where the encoder looks, any direction"
    weighting = staticmethod(absolute_gradient)


@register
class AttentionRollout(Rollout):
    """Attention rollout, rows renormalised as in Abnar & Zuidema's and Chefer's code (default)."""

    name = "rollout"
    description = "attention rollout (Abnar & Zuidema), rows renormalised; no gradients, class-agnostic"
    needs_gradients = False
    default_renormalize = True


@register
class AttentionRolloutEq1(Rollout):
    """Attention rollout exactly as the paper's eq. 1: ``I + E_H A`` without renormalisation.

    For plain attention every row of ``I + E_H A`` sums to 2, so this equals
    :class:`AttentionRollout` times ``2**L``; the two differ only in scale.
    """

    name = "rollout_eq1"
    description = "attention rollout as the paper's eq. 1 (no renormalisation; rollout times 2^L)"
    needs_gradients = False
