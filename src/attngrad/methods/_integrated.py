"""The integrated gradient of the last attention layer shared by TAM, BI-H and BI-token.

``Gbar = (1/K) sum_k grad_{A(L-1)} y(alpha_k x)``, ``alpha_k = k/(K-1)``, k = 0..K-1
(``numpy.linspace(0, 1, K)``: the alpha = 0 step is one of the K), ``y`` the target logit;
``W = mean_h(max(Gbar, 0))`` (rivals.md, section 0; Yuan et al., ``Transition_Attention_Maps``
``baselines/ViT/ViT_explanation_generator.py``, ``Baselines.generate_transition_attention_maps``;
Chen et al., ``transformerinterp`` ``ViT/baselines/ViT/ViT_explanation_generator.py``,
``Baselines.generate_ours``).

The K scaled copies of every image go through the model as one batch (``batch_size``
copies at a time), with an autograd graph from the last block on only.

:class:`IntegratedMethod` holds what TAM, BI-H and BI-T share: their options (``start_layer``,
``steps``, ``batch_size``), the start layer resolved and checked for a trace, and ``W``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..errors import AttngradError
from ..models.base import ModelAdapter
from ._blocks import forward_from_last_block
from ._common import check_layer, check_positive, resolve_layer
from .base import Method, Trace


def integrated_last_gradient(
    adapter: ModelAdapter, pixel_values: torch.Tensor, targets: torch.Tensor, steps: int, batch_size: int
) -> torch.Tensor:
    """``Gbar`` (B, H, N, N): the last layer's attention gradient of the target logit, averaged
    over the inputs ``alpha_k * x`` (the baseline is the all-zero model input)."""
    if steps < 2:
        raise AttngradError(f"steps must be at least 2 (got {steps}); the authors use 20")
    if batch_size < 1:
        raise AttngradError(f"batch_size must be at least 1 (got {batch_size})")
    count = pixel_values.shape[0]
    device = pixel_values.device
    alphas = torch.linspace(0, 1, steps, dtype=torch.float64).to(pixel_values.dtype)
    image_of = torch.arange(count, device=device).repeat_interleave(steps)
    alpha_of = alphas.to(device).repeat(count)
    total = None
    for start in range(0, count * steps, batch_size):
        images = image_of[start : start + batch_size]
        scaled = pixel_values.detach()[images] * alpha_of[start : start + batch_size].view(-1, 1, 1, 1)
        out = forward_from_last_block(adapter, scaled)
        score = out.logits.gather(1, targets.to(device)[images].view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, out.attentions[-1])
        if total is None:
            total = torch.zeros(count, *grad.shape[1:], dtype=grad.dtype, device=grad.device)
        total.index_add_(0, images, grad)
    if total is None:
        raise AttngradError("the integrated gradient needs at least one image")
    return total / steps


def integrated_weight(
    adapter: ModelAdapter, pixel_values: torch.Tensor, targets: torch.Tensor, steps: int, batch_size: int
) -> torch.Tensor:
    """``W = mean_h(max(Gbar, 0))`` (B, N, N): the clamp after the alpha mean, before the head mean."""
    return integrated_last_gradient(adapter, pixel_values, targets, steps, batch_size).clamp(min=0).mean(dim=1)


def shared_integrated_weight(trace: Trace, steps: int, batch_size: int) -> torch.Tensor:
    """:func:`integrated_weight` of the trace's images and targets, computed once per trace and number
    of steps: TAM, BI and BI-token asked for in one pass share the same ``steps`` scaled passes."""
    key = f"integrated_weight.steps={steps}"
    if key not in trace.extras:
        trace.extras[key] = integrated_weight(trace.adapter, trace.pixel_values, trace.targets, steps, batch_size)
    return trace.extras[key]


class IntegratedMethod(Method):
    """Base of the methods multiplying a rollout by ``W`` (TAM, BI-H, BI-T); not registered.

    Subclasses set ``default_start`` (their authors' start layer, in our 0-based count) and
    document the options in their own docstrings.

    Args:
        start_layer: lowest layer of the product, counted from 0 (``None``: ``default_start``,
            brought down to the last layer on a model with fewer blocks).
        steps: integration steps K (default 20, as both authors' code).
        batch_size: scaled copies per forward pass (default 64).
    """

    default_start: ClassVar[int] = 0

    def __init__(self, *, start_layer: int | None = None, steps: int = 20, batch_size: int = 64):
        self.start_layer = start_layer
        self.steps = steps
        self.batch_size = batch_size
        check_positive(self.name, steps=steps, batch_size=batch_size)

    def start(self, trace: Trace) -> int:
        """The start layer for this trace's model (see :func:`._common.resolve_layer`), checked."""
        layers = len(trace.attentions)
        start = resolve_layer(self.start_layer, self.default_start, layers)
        check_layer(self.name, start, layers)
        return start

    def integrated_weight(self, trace: Trace) -> torch.Tensor:
        """``W`` (B, N, N) of the trace, shared with the other methods of the pass (:func:`shared_integrated_weight`)."""
        return shared_integrated_weight(trace, self.steps, self.batch_size)
