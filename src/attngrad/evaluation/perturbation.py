"""The perturbation test (Chefer et al., CVPR 2021; used by Cui, Fan & Chen), batched.

For each image and its explained class the map is upsampled bilinearly to the input's
pixels and the pixels are ranked by it; for 10 %, 20 %, ..., 90 % of the pixels, exactly
``floor(f * H * W)`` of them are set to 0 in ``[0, 1]`` pixel space (black, then normalised
as usual) - highest-scored first (**positive** perturbation: a lower area is better) or
lowest first (**negative** perturbation: a higher area is better) - and the model's top-1
prediction is compared with the class. The curve is the accuracy over the data set at 0 %
(the unperturbed images), 10 %, ..., 90 %; its area is the trapezoid rule with step 0.1,
x 100 (method.md, "Evaluation: the perturbation test").

Beyond the paper, :class:`InsertionDeletion` is the insertion / deletion test of Petsiuk
et al. (RISE, BMVC 2018) on the same ranking: the class probability while the
highest-scored pixels are deleted (set to 0, lower area is better) or inserted into a
blurred copy of the image (higher area is better), at 0 %, 10 %, ..., 100 %.

Like Quantus metrics, both classes state their own direction (``higher_is_better``) and
work on batches.
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
#: Insertion / deletion: x-axis 0, 10, ..., 100 % (the runner adds both ends).
INSERTION_PERCENTS: tuple[int, ...] = (*PERCENTS, 100)
INSERTION_DIRECTIONS: tuple[str, ...] = ("insertion", "deletion")

Forward = Callable[[torch.Tensor], torch.Tensor]


def auc(curve: np.ndarray | list[float]) -> float | np.ndarray:
    """Area under a curve sampled at 0 %, 10 %, ..., 90 % (perturbation test) or ..., 100 %
    (insertion / deletion): ``np.trapezoid`` with step 0.1, x 100.

    ``curve`` holds fractions in [0, 1] (accuracy or probability); a constant curve of 1 gives
    90 (or 100 over 0..100 %). A (..., P) array (e.g. one curve per image) gives one area per curve.
    """
    values = np.asarray(curve, dtype=np.float64)
    if values.shape[-1] not in (len(PERCENTS), len(INSERTION_PERCENTS)):
        raise AttngradError(
            f"a curve has {len(PERCENTS)} points (0 %..90 %) or {len(INSERTION_PERCENTS)} (0 %..100 %), "
            f"not {values.shape[-1]}"
        )
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


def remove_pixels(
    unit: torch.Tensor, ranks: torch.Tensor, count: int | torch.Tensor, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Copy of ``unit`` (B, C, H, W) in [0, 1] with the ``count`` first-ranked pixels of each image set
    to 0, or to the same pixels of ``fill`` (B, C, H, W) when given.

    ``count`` is one number for all images or a (B,) tensor, one per image.
    """
    threshold = torch.as_tensor(count, device=ranks.device).reshape(-1, 1)
    keep = (ranks >= threshold).view(unit.shape[0], 1, *unit.shape[-2:])
    if fill is None:
        return unit * keep.to(unit.dtype)
    return torch.where(keep, unit, fill)


def class_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax probability of each row's class: logits (B, ..., K), targets (B,) -> (B, ...)."""
    probs = logits.float().softmax(dim=-1)
    index = targets.to(probs.device).view(-1, *([1] * (probs.dim() - 1))).expand(*probs.shape[:-1], 1)
    return probs.gather(-1, index)[..., 0]


def blur(unit: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) images: the insertion test's start, with RISE's parameters
    (11 x 11, sigma 5) as a truncated, normalised Gaussian, separable, with reflected borders.

    RISE's own code blurs with scipy's ``gaussian_filter`` of an 11 x 11 delta (nearly a box
    filter) and zero padding, in normalised space; this one blurs the [0, 1] pixels.
    """
    x = torch.arange(size, dtype=unit.dtype, device=unit.device) - (size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = unit.shape[1]
    out = F.pad(unit, (size // 2,) * 4, mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, size, 1), groups=channels)


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
        if direction not in self.directions:
            raise AttngradError(f"unknown direction {direction!r}; use {' or '.join(self.directions)}")
        self.direction = direction
        self.batch_size = max(1, int(batch_size))
        self.steps = steps

    @property
    def higher_is_better(self) -> bool:
        """Negative perturbation: the class should survive long (high area); positive: the reverse."""
        return self.direction == "negative"

    @property
    def descending(self) -> bool:
        """Whether the highest-scored pixels are taken first."""
        return self.direction == "positive"

    def start_and_fill(self, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image the ranked pixels are taken from, and what replaces them (None: 0)."""
        return unit, None

    def __call__(
        self,
        forward: Forward,
        unit: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        normalize: Callable[[torch.Tensor], torch.Tensor],
    ) -> PerturbationResult:
        batch, _, height, width = unit.shape
        ranks = pixel_ranks(maps.to(unit.device), (height, width), descending=self.descending)
        source, fill = self.start_and_fill(unit)
        counts = removal_counts(height * width, self.steps)
        # All (image, step) pairs, step-major inside each image, evaluated in chunks.
        pairs = [(b, s) for b in range(batch) for s in range(len(counts))]
        logits_rows = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            rows = torch.tensor([b for b, _ in chunk], device=unit.device)
            thresholds = torch.tensor([counts[s] for _, s in chunk], device=unit.device)
            perturbed = remove_pixels(source[rows], ranks[rows], thresholds, None if fill is None else fill[rows])
            logits_rows.append(forward(normalize(perturbed)).float())
        logits = torch.cat(logits_rows).view(batch, len(counts), -1)
        targets = targets.to(logits.device)
        correct = logits.argmax(dim=-1) == targets[:, None]
        return PerturbationResult(correct.cpu(), class_probability(logits, targets).cpu())


class InsertionDeletion(PerturbationTest):
    """Insertion or deletion (Petsiuk et al., RISE, BMVC 2018) on a batch, highest-scored pixels first.

    - ``"deletion"``: the first-ranked pixels are set to 0 (as in positive perturbation); the
      class probability should fall fast, so a **lower** area is better.
    - ``"insertion"``: the first-ranked pixels of the image are pasted into its blurred copy
      (:func:`blur`); the probability should rise fast, so a **higher** area is better.

    A call returns the steps 10 %, ..., 90 %; the ends are shared by all methods and come from
    the caller: the image itself (deletion 0 %, insertion 100 %), the black image (deletion 100 %)
    and the blurred image (insertion 0 %). Read ``probability``; ``correct`` is reported too.
    """

    directions: ClassVar[tuple[str, ...]] = INSERTION_DIRECTIONS

    def __init__(
        self, direction: str, batch_size: int = 32, steps: tuple[int, ...] = STEPS, blurred: torch.Tensor | None = None
    ):
        """``blurred``: the blurred images when the caller has them already (default: :func:`blur` of the batch)."""
        super().__init__(direction, batch_size, steps)
        self.blurred = blurred

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "insertion"

    @property
    def descending(self) -> bool:
        return True

    def start_and_fill(self, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.direction == "deletion":
            return unit, None
        return (blur(unit) if self.blurred is None else self.blurred), unit
