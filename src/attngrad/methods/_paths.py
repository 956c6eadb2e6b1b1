"""The engine of integrated gradients in the space of any layer: quadrature, baselines, batched paths.

``IG_i = (x_i - x'_i) · ∫_0^1 ∂f/∂x_i (x' + α (x - x')) dα``, the integral replaced by a quadrature
rule ``Σ_k w_k g(α_k)``; ``x`` is a layer's features for the input (the model input, a block's
output, a layer's attention maps), ``x'`` their baseline, ``f`` the explained loss with that
layer set to the path point. Completeness: ``Σ_i IG_i = f(x) - f(x')`` up to the quadrature error.

Every (item, node) pair is one row of a batch; rows go through the model ``batch_size`` at a
time (``whole_batch``: for adapters whose state is tied to the batch, such as the text views,
one node of every item per pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import AttngradError

#: Quadrature rules on [0, 1] and the nodes they use for ``steps``:
#: ``riemann_left`` α = k/steps (k = 0..steps-1), ``riemann_right`` α = k/steps (k = 1..steps),
#: ``trapezoid`` α = k/steps (k = 0..steps, ends weighted 1/2), ``gauss_legendre`` the ``steps``
#: Gauss–Legendre nodes mapped to [0, 1].
RULES = ("riemann_left", "riemann_right", "trapezoid", "gauss_legendre")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``α_k`` and weights ``w_k`` (summing to 1) of ``rule`` with ``steps`` intervals (nodes for Gauss–Legendre).

    Exact for polynomial integrands of degree 0 (Riemann), 1 (trapezoid), ``2·steps - 1`` (Gauss–Legendre).
    """
    if rule not in RULES:
        raise AttngradError(f"unknown quadrature rule {rule!r}; choose from {', '.join(RULES)}")
    if rule == "riemann_left":
        return np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    if rule == "riemann_right":
        return np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] /= 2
        return np.arange(steps + 1) / steps, weights
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def passes(rule: str, steps: int) -> int:
    """Forward + backward passes per item (the number of nodes)."""
    return steps + 1 if rule == "trapezoid" else steps


Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PathResult:
    """Integrated gradients of a batch in one layer's space.

    Attributes:
        attributions: ``(x - x') ⊙ Σ_k w_k ∇f(x' + α_k (x - x'))``, the layer's shape (B, ...).
        f_input, f_baseline: (B,) the loss at the input and with the layer set to its baseline.
        passes: model passes per item: ``forward_backward`` (one per node) and ``forward`` (the ends
            not among the nodes).
    """

    attributions: torch.Tensor
    f_input: torch.Tensor
    f_baseline: torch.Tensor
    passes: dict[str, int] = field(default_factory=dict)

    @property
    def target(self) -> torch.Tensor:
        """The attribution target ``f(x) - f(x')`` (B,)."""
        return self.f_input - self.f_baseline

    @property
    def total(self) -> torch.Tensor:
        """The sum of the attributions per item (B,)."""
        return self.attributions.flatten(1).sum(dim=1)

    def error(self) -> dict[str, torch.Tensor]:
        """The attribution error per item: ``target``, ``total``, ``absolute = |total - target|`` and
        ``relative = absolute / |target|`` (infinite when the target is 0 and the sum is not)."""
        target, total = self.target, self.total
        absolute = (total - target).abs()
        return {"target": target, "total": total, "absolute": absolute, "relative": absolute / target.abs()}


def _rows(count: int, nodes: int, batch_size: int, whole_batch: bool, device: torch.device):
    """(items, node indices) per pass: item-major flat chunks, or (``whole_batch``) every item at one node."""
    if whole_batch:
        items = torch.arange(count, device=device)
        for k in range(nodes):
            yield items, torch.full((count,), k, device=device, dtype=torch.long)
        return
    item_of = torch.arange(count, device=device).repeat_interleave(nodes)
    node_of = torch.arange(nodes, device=device).repeat(count)
    for start in range(0, count * nodes, batch_size):
        yield item_of[start : start + batch_size], node_of[start : start + batch_size]


def integrate(
    run: Run,
    values: torch.Tensor,
    baseline: torch.Tensor,
    *,
    rule: str,
    steps: int,
    batch_size: int,
    whole_batch: bool = False,
) -> PathResult:
    """Integrated gradients of ``run`` along the straight path from ``baseline`` to ``values`` (both (B, ...)).

    ``run(items, points)`` returns the loss (M,) of the rows ``items`` (M,) with the layer set to
    ``points`` (M, ...), differentiably in ``points``. The ends ``f(x)``, ``f(x')`` come from the
    nodes when the rule has them (trapezoid), else from forward passes without gradients.
    """
    values, baseline = values.detach(), baseline.detach().expand_as(values)
    count, device = values.shape[0], values.device
    alphas, weights = quadrature(rule, steps)
    alpha_t = torch.as_tensor(alphas, dtype=values.dtype, device=device)
    weight_t = torch.as_tensor(weights, dtype=values.dtype, device=device)
    shape = (-1,) + (1,) * (values.dim() - 1)
    delta = values - baseline
    total = torch.zeros_like(values)
    at_node = torch.zeros(count, len(alphas), dtype=values.dtype, device=device)
    for items, nodes in _rows(count, len(alphas), batch_size, whole_batch, device):
        points = (baseline[items] + alpha_t[nodes].view(shape) * delta[items]).requires_grad_(True)
        with torch.enable_grad():
            loss = run(items, points)
            (grad,) = torch.autograd.grad(loss.sum(), points)
        total.index_add_(0, items, grad * weight_t[nodes].view(shape))
        at_node[items, nodes] = loss.detach().to(values.dtype)
    ends = {}
    extra = 0
    for end in (0.0, 1.0):
        hit = np.flatnonzero(np.isclose(alphas, end, atol=0.0, rtol=0.0))
        if hit.size:
            ends[end] = at_node[:, int(hit[0])]
            continue
        extra += 1
        found = torch.zeros(count, dtype=values.dtype, device=device)
        rows = range(0, count, batch_size) if not whole_batch else [0]
        with torch.no_grad():
            for start in rows:
                stop = count if whole_batch else start + batch_size
                items = torch.arange(start, min(stop, count), device=device)
                found[items] = run(items, baseline[items] + end * delta[items]).to(values.dtype)
        ends[end] = found
    return PathResult(delta * total, ends[1.0], ends[0.0], {"forward_backward": len(alphas), "forward": extra})


# ------------------------------------------------------------------ baselines


def gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel of (B, C, H, W) blurred by a Gaussian of ``sigma`` pixels (reflected borders)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, pixels.shape[-1] - 1, pixels.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=pixels.dtype, device=pixels.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = pixels.shape[1]
    out = torch.nn.functional.pad(pixels, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
