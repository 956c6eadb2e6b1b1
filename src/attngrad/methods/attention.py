"""Last-layer baselines: raw attention and attention GradCAM (Chefer et al., CVPR 2021, Table 1)."""

from __future__ import annotations

import torch

from ._common import gradients
from .base import Method, Trace, register


@register
class RawAttention(Method):
    """The last layer's attention, head mean, read token's row (method.md, "Methods to compare against")."""

    name = "raw_attention"
    description = "the last layer's attention, head mean (baseline; no gradients)"
    needs_gradients = False

    def token_scores(self, trace: Trace) -> torch.Tensor:
        return trace.attentions[-1].mean(dim=1)[:, trace.token]


@register
class AttentionGradCAM(Method):
    """GradCAM on the last attention layer, as Chefer's baselines compute it.

    ``w_h`` = mean of ``grad A(L)`` over the read row's patch entries;
    map = ``max(E_H(w_h * A(L)[token, :]), 0)``.
    """

    name = "attn_gradcam"
    description = "GradCAM on the last attention layer, positive part (Chefer et al.'s baseline)"

    def gradient_start(self, num_layers: int) -> int:
        return num_layers - 1  # the last layer only: the backward pass stops at its attention

    def token_scores(self, trace: Trace) -> torch.Tensor:
        attn = trace.attentions[-1][:, :, trace.token]  # (B, H, N)
        grad = gradients(trace, self.name, len(trace.attentions) - 1)[-1][:, :, trace.token]
        weights = grad[:, :, trace.num_prefix_tokens :].mean(dim=-1, keepdim=True)  # (B, H, 1)
        return (weights * attn).mean(dim=1).clamp(min=0)
