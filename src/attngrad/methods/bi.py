"""Beyond Intuition: Rethinking Token Attributions inside Transformers (Chen et al.,
TMLR 2023, openreview rm0zIzlhcX): head-wise ``bi`` and token-wise
``bi_token``.

Follows the authors' code (``jiaminchen-1031/transformerinterp``,
``ViT/baselines/ViT/ViT_explanation_generator.py``: ``Baselines.generate_ours`` for BI-H,
``Baselines.generate_ours_c`` for BI-T), as ``rivals.md`` sections 2 and 3 describe it.
Their code counts layers from 1 and runs one image at a time (BI-T silently averages the
attention over the images of a batch); here ``start_layer`` counts from 0 like every other
attngrad method (their 4 is our 3, their 7 our 6) and every image of a batch is independent.

Both read row ``t`` (CLS) of ``R = (I + M(L-1)) ··· (I + M(start_layer))`` at the patch
columns, times ``W[t, :]``, the last layer's integrated gradient (:mod:`._integrated`):

- BI-H: ``M(l) = sum_h w_h A_h(l)``, ``w_h ∝ mean_ij |(A_h(l)^T grad A_h(l))_ij|`` (sums to 1);
- BI-T: ``M(l) = Abar(l) diag(o)``, ``o_i = ||v_i W_O^T|| / ||z_i||`` with ``z`` the block's input
  and ``v`` its value vectors (the token's update by attention relative to its residual).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from ..models.base import ModelAdapter
from ._blocks import blocks, family, record_block_inputs, value_output
from ._common import gradients, recorded, recording
from ._integrated import IntegratedMethod
from .base import Trace, register
from .rollout import rollout

_INPUTS = "bi_token.block_inputs"


@register
class BeyondIntuitionHead(IntegratedMethod):
    """BI-H: rollout of the head-weighted attention times the integrated gradient.

    Head ``h`` of layer ``l`` weighs ``mean_ij |(A_h^T grad A_h)_ij|`` (normalised to sum 1),
    from the shared trace's attention gradient (of its loss: the target logit by default,
    as in the authors' code).

    Args:
        start_layer: first layer of the product, counted from 0 (default 3 = the authors' 4 in
            their 1-based count, the value of their perturbation script; the last block on a
            model with fewer blocks).
        steps: integration steps K (default 20).
        batch_size: scaled copies per forward pass (default 64).

    Cost per image: 1 forward + 1 backward (shared trace) + ``steps`` forwards with a backward
    through the last block only.
    """

    name = "bi"
    needs_gradients = True
    signed = False
    description = "Beyond Intuition, head-wise (Chen et al., TMLR 2023): head-weighted rollout x integrated gradient"

    default_start = 3

    def mixes(self, trace: Trace) -> list[torch.Tensor]:
        mixes = []
        start = self.start(trace)
        for attn, grad in zip(trace.attentions[start:], gradients(trace, self.name)[start:]):
            importance = torch.matmul(attn.transpose(-1, -2), grad).abs().mean(dim=(-2, -1))  # (B, H)
            weights = importance / importance.sum(dim=1, keepdim=True)
            mixes.append((weights[:, :, None, None] * attn).sum(dim=1))
        return mixes

    def token_scores(self, trace: Trace) -> torch.Tensor:
        row = rollout(self.mixes(trace), trace.token)
        weight = self.integrated_weight(trace)
        return weight[:, trace.token] * row


@register
class BeyondIntuitionToken(BeyondIntuitionHead):
    """BI-T: rollout of ``Abar(l) diag(o(l))`` times the integrated gradient, ``o_i`` the norm
    of token ``i``'s attention-value update over the norm of its residual ``z_i``.

    The blocks' inputs are recorded during the shared forward pass (:meth:`capture`); a trace
    made without them gets one more forward pass.

    Args:
        start_layer: first layer of the product, counted from 0 (default 6 = the authors' 7 in
            their 1-based count, the value behind their published ViT numbers; the last block
            on a model with fewer blocks).
        steps: integration steps K (default 20).
        batch_size: scaled copies per forward pass (default 64).
    """

    name = "bi_token"
    needs_gradients = False
    description = "Beyond Intuition, token-wise (Chen et al., TMLR 2023): value-norm-weighted rollout x integrated gradient"

    default_start = 6

    def capture(self, adapter: ModelAdapter, extras: dict[str, Any]) -> AbstractContextManager[None]:
        return recording(adapter, extras, _INPUTS, record_block_inputs)

    def mixes(self, trace: Trace) -> list[torch.Tensor]:
        inputs = recorded(trace, _INPUTS, record_block_inputs)
        model = trace.adapter.model
        mixes = []
        start = self.start(trace)
        fam = family(model)
        with torch.no_grad():
            for layer, block in enumerate(blocks(model)):
                if layer < start:
                    continue
                z = inputs[layer]
                ratio = value_output(block, z, fam).norm(dim=-1) / z.norm(dim=-1)  # (B, N)
                mixes.append(trace.attentions[layer].mean(dim=1) * ratio[:, None, :])
        return mixes

    def token_scores(self, trace: Trace) -> torch.Tensor:
        return super().token_scores(trace).abs()

