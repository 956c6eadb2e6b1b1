"""Relevance-update rules for heterogeneous attention: self-attention of a source, cross-attention between two.

Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability for Interpreting
Bi-Modal and Encoder-Decoder Transformers", Sec. 3, eqs. 5-11; their code:
``hila-chefer/Transformer-MM-Explainability``, ``lxmert/lxmert/src/ExplanationGenerator.py``
(``avg_heads``, ``apply_self_attention_rules``, ``apply_mm_attention_rules``,
``handle_residual``, ``GeneratorOurs.generate_ours``) and ``DETR/modules/ExplanationGenerator.py``
(``Generator.generate_ours``, ``handle_co_attn_self_query``, ``handle_co_attn_query``: the
encoder-decoder case). Written here from the equations, generically over named sources.

Every source ``x`` (text tokens, image regions, encoder tokens, decoder tokens) has a
self-relevance map ``R^{xx}`` (initially ``I``), and every ordered pair ``(x, y)`` a
relevance map ``R^{xy}`` (initially 0): row ``i`` of ``R^{xy}`` says how much each token of
``y`` contributes to token ``i`` of ``x``. Each attention layer's map ``A`` (heads, queries,
keys) is turned into ``Abar = E_H(w ⊙ A)`` (eq. 5, :func:`head_mix`) with a weighting ``w``
of method.md: ``gae`` (their choice, ``max(grad A ⊙ A, 0)``), ``complete`` (signed,
``grad A ⊙ A``), ``absolute`` (``|grad A| ⊙ A``) or ``rollout`` (``A``). Then

- self-attention of ``x`` (eqs. 6-7), for every source ``y``:
  ``R^{xy} <- R^{xy} + Abar^{xx} · R^{xy}``  (``R^{xx}`` included);
- cross-attention, queries of ``x`` reading keys of ``y`` (eqs. 8-11):
  ``Rbar^{zz} = (R^{zz} - I) / rowsum(R^{zz} - I) + I`` (eqs. 8-9, :func:`normalize_self`),
  ``R^{xy} <- R^{xy} + (Rbar^{xx})^T · Abar^{xy} · Rbar^{yy}`` (eq. 10) and
  ``R^{xx} <- R^{xx} + Abar^{xy} · R^{yx}`` (eq. 11), both from the maps as they were before
  the layer; co-attention layers whose two directions run in parallel (LXMERT) are applied
  together by :meth:`Relevance.cross_attention` with several ``(x, y, Abar)`` at once.

Signed maps. Chefer's maps are non-negative, so ``R^{zz} - I >= 0`` and its row sums are
positive. With ``complete`` the entries carry a sign and a row sum can be 0 or negative;
dividing by it would blow up or flip the row. The row is therefore divided by
``sum_j |R^{zz} - I|_{ij}`` — which *is* the row sum whenever the map is non-negative
(``gae``, ``absolute``, ``rollout``: identical to the authors' code) — and a row that is all
zero stays zero (their code turns the resulting NaN into 0 after the product).

Everything is batched: maps are ``(B, n_x, n_y)``; padding is handled by the masks given to
:func:`head_mix` (padded rows and columns of ``Abar`` are 0, so padded tokens keep the
initial maps and never reach a real token's row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import cast

import torch

from ..errors import AttngradError
from ..methods.rollout import (
    absolute_gradient,
    plain,
    positive_gradient,
    signed_gradient,
)

Weighting = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]

#: The weightings ``w`` of method.md by name (``w ⊙ A`` per head, before the head mean).
WEIGHTINGS: dict[str, Weighting] = {
    "complete": cast(Weighting, signed_gradient),
    "gae": cast(Weighting, positive_gradient),
    "absolute": cast(Weighting, absolute_gradient),
    "rollout": plain,
}

#: Whether a weighting's maps are signed (support/oppose) or magnitudes (method.md).
SIGNED = {"complete": True, "gae": False, "absolute": False, "rollout": False}


def weighting(name: str) -> Weighting:
    """The weighting called ``name`` (``complete``, ``gae``, ``absolute``, ``rollout``)."""
    if name not in WEIGHTINGS:
        raise AttngradError(
            f"unknown method {name!r} for cross-attention explanations; choose from {', '.join(WEIGHTINGS)}",
            field="method", choices=WEIGHTINGS,
        )
    return WEIGHTINGS[name]


def head_mix(
    attn: torch.Tensor,
    grad: torch.Tensor | None,
    weight: Weighting,
    query_mask: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Abar = E_H(w ⊙ A)`` (eq. 5; ``avg_heads`` in the authors' code), masked.

    Args:
        attn: (B, H, n_q, n_k) attention probabilities.
        grad: its gradient (same shape), or ``None`` for ``rollout``.
        weight: a weighting from :data:`WEIGHTINGS`.
        query_mask, key_mask: (B, n_q), (B, n_k) true on tokens that take part; rows
            (queries) and columns (keys) outside are set to 0.

    Returns:
        (B, n_q, n_k).
    """
    mix = weight(attn, grad).mean(dim=1)
    if query_mask is not None:
        mix = mix * query_mask[:, :, None].to(mix.dtype)
    if key_mask is not None:
        mix = mix * key_mask[:, None, :].to(mix.dtype)
    return mix


def _eye(batch: int, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device).expand(batch, n, n)


def normalize_self(relevance: torch.Tensor) -> torch.Tensor:
    """``Rbar = (R - I) / rowsum|R - I| + I`` for a batch of self-relevance maps (B, n, n) (eqs. 8-9).

    ``handle_residual`` in the authors' code; the absolute value only matters for signed maps
    (see the module docstring); an all-zero row stays zero before ``I`` is added back.
    """
    eye = _eye(relevance.shape[0], relevance.shape[-1], relevance)
    hat = relevance - eye
    total = hat.abs().sum(dim=-1, keepdim=True)
    safe = torch.where(total == 0, torch.ones_like(total), total)
    return torch.where(total == 0, torch.zeros_like(hat), hat / safe) + eye


class Relevance:
    """The relevance maps ``R^{xy}`` of a set of named sources, and the rules that update them.

    Args:
        sizes: tokens per source, e.g. ``{"s": n_source, "t": n_target}``.
        batch: batch size.
        like: a tensor whose dtype and device the maps take.
        normalize: apply the normalisation of eqs. 8-9 in cross-attention layers (the authors'
            ``normalize_self_attention``, default on).

    Attributes:
        maps: ``{(x, y): (B, n_x, n_y)}``; ``R^{xx}`` starts as ``I``, ``R^{xy}`` as 0.
    """

    def __init__(self, sizes: dict[str, int], batch: int, like: torch.Tensor, normalize: bool = True):
        self.sizes = dict(sizes)
        self.normalize = normalize
        self.maps: dict[tuple[str, str], torch.Tensor] = {}
        for x, nx in self.sizes.items():
            for y, ny in self.sizes.items():
                if x == y:
                    self.maps[x, y] = _eye(batch, nx, like).clone()
                else:
                    self.maps[x, y] = torch.zeros(batch, nx, ny, dtype=like.dtype, device=like.device)

    def __getitem__(self, pair: tuple[str, str]) -> torch.Tensor:
        return self.maps[pair]

    def _check(self, name: str, mix: torch.Tensor, rows: str, cols: str) -> None:
        expected = (self.sizes[rows], self.sizes[cols])
        if tuple(mix.shape[-2:]) != expected:
            raise ValueError(f"{name}: map of shape {tuple(mix.shape)} for sources {rows}->{cols} of sizes {expected}")

    def self_attention(self, x: str, mix: torch.Tensor) -> None:
        """A self-attention layer of source ``x``: ``R^{xy} += Abar^{xx} · R^{xy}`` for every ``y`` (eqs. 6-7).

        ``apply_self_attention_rules`` in the authors' code; ``mix`` is ``Abar^{xx}`` (B, n_x, n_x).
        """
        self._check("self_attention", mix, x, x)
        for y in self.sizes:
            self.maps[x, y] = self.maps[x, y] + torch.bmm(mix, self.maps[x, y])

    def cross_attention(self, *layers: tuple[str, str, torch.Tensor]) -> None:
        """Cross-attention layers ``(x, y, Abar^{xy})``, queries of ``x`` reading keys of ``y`` (eqs. 8-11).

        ``apply_mm_attention_rules`` in the authors' code. Every addition is computed from the
        maps as they were before this call, so the two directions of a co-attention layer
        (LXMERT's ``handle_co_attn_lang`` and ``handle_co_attn_image``) are given together:
        ``cross_attention(("t", "i", A_ti), ("i", "t", A_it))``. For each ``(x, y, Abar)``:

        - eq. 10: ``R^{xy} += (Rbar^{xx})^T · Abar · Rbar^{yy}`` (``Rbar`` of :func:`normalize_self`
          when ``normalize``, else ``R`` itself);
        - eq. 11: ``R^{xx} += Abar · R^{yx}``.
        """
        old = dict(self.maps)
        additions: list[tuple[tuple[str, str], torch.Tensor]] = []
        for x, y, mix in layers:
            self._check("cross_attention", mix, x, y)
            if x == y:
                raise ValueError("cross_attention needs two different sources; use self_attention for x -> x")
            rxx, ryy = old[x, x], old[y, y]
            if self.normalize:
                rxx, ryy = normalize_self(rxx), normalize_self(ryy)
            additions.append(((x, y), torch.bmm(rxx.transpose(1, 2), torch.bmm(mix, ryy))))
            additions.append(((x, x), torch.bmm(mix, old[y, x])))
        for pair, addition in additions:
            self.maps[pair] = self.maps[pair] + addition


def encoder_decoder(
    encoder: Sequence[torch.Tensor],
    decoder: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    normalize: bool = True,
) -> Relevance:
    """The maps of an encoder-decoder Transformer, source ``"s"`` (encoder) and target ``"t"`` (decoder).

    The order of the authors' DETR generator (``Generator.generate_ours``): every encoder
    self-attention layer, then per decoder layer its self-attention and its cross-attention
    (decoder queries, encoder keys). The encoder never reads the decoder, so ``R^{st}`` stays
    0 and eq. 11 adds nothing to ``R^{tt}``; it is applied anyway (generic code).

    Args:
        encoder: per encoder layer, ``Abar^{ss}`` (B, n_s, n_s).
        decoder: per decoder layer, ``(Abar^{tt}, Abar^{ts})``: (B, n_t, n_t) and (B, n_t, n_s).
        normalize: the normalisation of eqs. 8-9.

    Returns:
        the :class:`Relevance`; ``R["t", "s"]`` (decoder rows over source tokens) and
        ``R["t", "t"]`` (decoder rows over decoder tokens) are the explanations.
    """
    if not encoder:
        raise ValueError("encoder_decoder needs at least one encoder layer")
    decoder = list(decoder)
    if not decoder:
        raise ValueError("encoder_decoder needs at least one decoder layer")
    batch, n_s = encoder[0].shape[:2]
    n_t = decoder[0][0].shape[1]
    relevance = Relevance({"s": n_s, "t": n_t}, batch, encoder[0], normalize)
    for mix in encoder:
        relevance.self_attention("s", mix)
    for self_mix, cross_mix in decoder:
        relevance.self_attention("t", self_mix)
        relevance.cross_attention(("t", "s", cross_mix))
    return relevance
