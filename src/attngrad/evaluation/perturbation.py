"""The perturbation test (Chefer et al., CVPR 2021; used by Cui, Fan & Chen), batched.

For each image and its explained class the map is upsampled bilinearly to the input's
pixels and the pixels are ranked by it; for 10 %, 20 %, ..., 90 % of the pixels, exactly
``floor(f * H * W)`` of them are set to 0 in ``[0, 1]`` pixel space (black, then normalised
as usual) - highest-scored first (**positive** perturbation: a lower area is better) or
lowest first (**negative** perturbation: a higher area is better) - and the model's top-1
prediction is compared with the class. The curve is the accuracy over the data set at 0 %
(the unperturbed images), 10 %, ..., 90 %; its area is the trapezoid rule with step 0.1,
x 100 (method.md, "Evaluation: the perturbation test").

Like a Quantus metric, :class:`PerturbationTest` states its own direction
(``higher_is_better``) and works on batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AttngradError

#: Fractions of removed pixels, in tenths, after the unperturbed 0 %.
STEPS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9)
#: x-axis of a curve, in percent: 0, 10, ..., 90.
PERCENTS: tuple[int, ...] = (0, *(10 * s for s in STEPS))
DIRECTIONS: tuple[str, ...] = ("positive", "negative")

Forward = Callable[[torch.Tensor], torch.Tensor]


def auc(curve: np.ndarray | list[float]) -> float | np.ndarray:
    """Area under a curve sampled at 0 %, 10 %, ..., 90 %: ``np.trapezoid`` with step 0.1, x 100.

    ``curve`` holds fractions in [0, 1] (accuracy); a constant curve of 1 gives 90. A (..., 10)
    array (e.g. one curve per image) gives one area per curve.
    """
    values = np.asarray(curve, dtype=np.float64)
    if values.shape[-1] != len(PERCENTS):
        raise AttngradError(f"a perturbation curve has {len(PERCENTS)} points (0 %..90 %), not {values.shape[-1]}")
    area = np.trapezoid(values, dx=0.1, axis=-1) * 100.0
    return float(area) if values.ndim == 1 else area


def removal_counts(num_pixels: int, steps: tuple[int, ...] = STEPS) -> list[int]:
    """Pixels removed at each step: ``floor(step / 10 * num_pixels)``, in exact integer arithmetic."""
    return [step * num_pixels // 10 for step in steps]


def pixel_ranks(maps: torch.Tensor, size: tuple[int, int], descending: bool) -> torch.Tensor:
    """Rank (B, H*W) of every input pixel under the bilinearly upsampled map (0 = removed first).

    Ties keep pixel order (a stable sort), so the ranking does not depend on the batch.
    """
    scores = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False).flatten(1)
    order = torch.argsort(scores, dim=1, descending=descending, stable=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def remove_pixels(unit: torch.Tensor, ranks: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """Copy of ``unit`` (B, C, H, W) in [0, 1] with the ``count`` first-ranked pixels of each image set to 0.

    ``count`` is one number for all images or a (B,) tensor, one per image.
    """
    threshold = torch.as_tensor(count, device=ranks.device).reshape(-1, 1)
    keep = (ranks >= threshold).view(unit.shape[0], 1, *unit.shape[-2:])
    return unit * keep.to(unit.dtype)


@dataclass
class PerturbationResult:
    """Per image and step (10 %, ..., 90 %): whether top-1 equals the class, and its probability."""

    correct: torch.Tensor  # (B, S) bool
    probability: torch.Tensor  # (B, S) float


class PerturbationTest:
    """One direction of the perturbation test, applied to a batch (a Quantus-style metric).

    Args:
        direction: ``"positive"`` (remove the highest-scored pixels first; lower AUC is better)
            or ``"negative"`` (remove the lowest first; higher AUC is better).
        batch_size: perturbed images per forward pass.
        steps: removed fractions in tenths.

    Call it with ``forward`` (model input -> logits), the images as ``[0, 1]`` pixels,
    their maps (B, gh, gw), the explained classes, and ``normalize`` ([0, 1] -> model input).
    """

    directions: ClassVar[tuple[str, ...]] = DIRECTIONS

    def __init__(self, direction: str, batch_size: int = 32, steps: tuple[int, ...] = STEPS):
        if direction not in DIRECTIONS:
            raise AttngradError(f"unknown direction {direction!r}; use positive or negative")
        self.direction = direction
        self.batch_size = max(1, int(batch_size))
        self.steps = steps

    @property
    def higher_is_better(self) -> bool:
        """Negative perturbation: the class should survive long (high area); positive: the reverse."""
        return self.direction == "negative"

    def __call__(
        self,
        forward: Forward,
        unit: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        normalize: Callable[[torch.Tensor], torch.Tensor],
    ) -> PerturbationResult:
        batch, _, height, width = unit.shape
        ranks = pixel_ranks(maps.to(unit.device), (height, width), descending=self.direction == "positive")
        counts = removal_counts(height * width, self.steps)
        # All (image, step) pairs, step-major inside each image, evaluated in chunks.
        pairs = [(b, s) for b in range(batch) for s in range(len(counts))]
        logits_rows = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            rows = torch.tensor([b for b, _ in chunk], device=unit.device)
            thresholds = torch.tensor([counts[s] for _, s in chunk], device=unit.device)
            perturbed = remove_pixels(unit[rows], ranks[rows], thresholds)
            logits_rows.append(forward(normalize(perturbed)).float())
        logits = torch.cat(logits_rows).view(batch, len(counts), -1)
        targets = targets.to(logits.device)
        correct = logits.argmax(dim=-1) == targets[:, None]
        probability = logits.softmax(dim=-1).gather(2, targets.view(-1, 1, 1).expand(-1, len(counts), 1))[..., 0]
        return PerturbationResult(correct.cpu(), probability.cpu())
