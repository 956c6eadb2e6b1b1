"""One rollout engine, many weightings: rollout, GAE, complete (the paper's method), absolute.

For each layer, ``Abar(l) = I + E_H(w(l) ⊙ A(l))``; the explanation is the read
token's row of ``Abar(L) · … · Abar(1)`` at the patch columns
(Cui, Fan & Chen, eqs. 1, 4, 5, 6; method.md, "The family of attention x gradient rollouts").
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from ._common import check_layer, gradients
from .base import Method, Trace, register

#: ``w ⊙ A`` per head from ``(A, grad A)``: the gradient weightings take the gradient, ``plain`` ignores it
#: (``None`` when the trace has none). :meth:`Rollout.token_scores` refuses a trace without the
#: gradients a method needs, before any weighting is called.
Weighting = Callable[[torch.Tensor, Any], torch.Tensor]


def read_row(batch: int, n: int, token: int | slice, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The starting row (B, 1, N): 1 at the read token (at each token of a slice), 0 elsewhere."""
    row = torch.zeros(batch, 1, n, dtype=dtype, device=device)
    row[:, 0, token] = 1.0
    return row


def fold(row: torch.Tensor, mix: torch.Tensor, *, renormalize: bool = False) -> torch.Tensor:
    """One layer of the product: ``row · Abar`` with ``Abar = I + mix``; row (B, 1, N), mix (B, N, N).

    With ``renormalize`` each row ``i`` of ``I + mix`` is divided by its sum ``s_i`` first, which is
    ``(row / s) · (I + mix)``: no N x N matrix besides ``mix`` is formed.
    """
    if renormalize:
        row = row / (1.0 + mix.sum(dim=-1))[:, None, :]
    return row + torch.bmm(row, mix)


def rollout(mixes: Sequence[torch.Tensor], token: int | slice, renormalize: bool = False) -> torch.Tensor:
    """Row ``token`` of ``prod_l (I + M_l)`` for layers last to first; ``mixes[l]`` is (B, N, N).

    Computed as a row vector from the last layer down (``v <- v · Abar(l)``, :func:`fold`), which is the
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
    row = read_row(batch, n, token, dtype=mixes[0].dtype, device=mixes[0].device)
    for mix in reversed(mixes):
        row = fold(row, mix, renormalize=renormalize)
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

    def gradient_start(self, num_layers: int) -> int:
        return self.start_layer

    def mix(self, attn: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """One layer's ``M = E_H(w ⊙ A)`` (B, N, N) from its maps (B, H, N, N) and their gradient."""
        return type(self).weighting(attn, grad).mean(dim=1)

    def token_scores(self, trace: Trace) -> torch.Tensor:
        start = self.first_layer(trace)
        # a gradient weighting is given the gradients (refused when the trace has none); ``plain`` None
        attn = trace.attentions
        grads: Sequence[torch.Tensor | None] = (
            gradients(trace, self.name, start) if self.needs_gradients else [None] * (len(attn) - start)
        )
        engine = RolloutEngine({self.name: self}, attn[0].shape[0], attn[0].shape[-1], trace.token,
                               dtype=attn[0].dtype, device=attn[0].device)
        for layer in reversed(range(start, len(attn))):
            engine.fold(layer, attn[layer], grads[layer - start])
        return engine.finish()[self.name]


class RolloutEngine:
    """The rollout engine of every family: each method's row of ``prod_l (I + M_l)``, folded one layer at a time.

    Layers arrive last first (:meth:`fold`), in the order a backward pass delivers the gradients
    ``∂loss/∂A(l)``; so a pass can fold each layer the moment its gradient arrives and release the
    layer's maps and gradient (language models, long inputs), or fold a finished trace's layers
    (:meth:`Rollout.token_scores`). Several rollout methods share the layers' maps and gradients.

    Args:
        methods: ``{name: Rollout}``; each folds the layers from its ``start_layer`` up.
        batch, n: the rows' shape (B, N); token: the row read (an index, or a slice whose rows are summed).
    """

    def __init__(self, methods: Mapping[str, Rollout], batch: int, n: int, token: int | slice, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.methods = dict(methods)
        self.rows = {k: read_row(batch, n, token, dtype=dtype, device=torch.device(device)) for k in self.methods}
        self.next_layer: int | None = None  # the layer expected next (None: any, the first call)

    def fold(self, layer: int, attn: torch.Tensor, grad: torch.Tensor | None) -> None:
        """Fold layer ``layer``'s maps (B, H, N, N) and gradient (or ``None``) into every method from that layer up."""
        if self.next_layer is not None and layer != self.next_layer:
            raise RuntimeError(f"the rollout got layer {layer} where layer {self.next_layer} was due (last layer first)")
        self.next_layer = layer - 1
        for name, method in self.methods.items():
            if layer >= method.start_layer:
                self.rows[name] = fold(self.rows[name], method.mix(attn, grad), renormalize=method.renormalize)

    def finish(self) -> dict[str, torch.Tensor]:
        """Every method's row (B, N), refused unless every layer down to each method's start arrived."""
        lowest = min((m.start_layer for m in self.methods.values()), default=0)
        if self.methods and (self.next_layer is None or self.next_layer >= lowest):
            raise RuntimeError("not every layer's attention reached the rollout (a layer's gradient did not arrive)")
        return {k: r[:, 0] for k, r in self.rows.items()}


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
