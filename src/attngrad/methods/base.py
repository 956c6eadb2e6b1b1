"""The interface every explanation method implements, and the pass they share.

One forward and (when any method needs it) one backward pass over a batch fill a
:class:`Trace`; a :class:`Method` turns a trace into one map per image. Several
methods can share one trace, so comparing methods costs one pass.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import AttngradError
from ..models.base import ModelAdapter


@dataclass
class Trace:
    """What one forward (+ backward) pass over a batch produced.

    Attributes:
        pixel_values: model input (B, 3, H, W).
        logits: (B, C), detached.
        attentions: per layer, ``A(l)`` (B, H, N, N): softmax probabilities, detached.
        gradients: per layer, ``grad A(l)`` of the summed per-image loss, or ``None``
            when no method asked for gradients.
        targets, contrasts: class indices (B,) the loss used (contrasts may be ``None``).
        token: index of the row read (0 = CLS).
        num_prefix_tokens: special tokens leading the sequence (excluded from maps).
        grid: the patch grid ``(gh, gw)``.
        adapter: the model adapter (for methods that need more than maps and gradients).
        extras: whatever methods' :meth:`Method.capture` contexts recorded during the pass.
    """

    pixel_values: torch.Tensor
    logits: torch.Tensor
    attentions: list[torch.Tensor]
    gradients: list[torch.Tensor] | None
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    token: int
    num_prefix_tokens: int
    grid: tuple[int, int]
    adapter: ModelAdapter
    extras: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class: subclasses set ``name`` and implement :meth:`token_scores` (or :meth:`__call__`).

    Class attributes:
        name: registry name.
        needs_gradients: whether the shared pass must backpropagate the loss to the maps.
    """

    name: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True

    def capture(self, adapter: ModelAdapter, extras: dict[str, Any]) -> AbstractContextManager[None]:
        """Context active during the forward pass; may record activations into ``extras``."""
        return nullcontext()

    def token_scores(self, trace: Trace) -> torch.Tensor:
        """Scores (B, N) over all tokens: the read row of the method's token-mixing matrix."""
        raise NotImplementedError

    def __call__(self, trace: Trace) -> torch.Tensor:
        """The map (B, gh, gw) over the patch grid: :meth:`token_scores` without the special tokens."""
        row = self.token_scores(trace)
        gh, gw = trace.grid
        patches = row[:, trace.num_prefix_tokens :]
        if patches.shape[1] != gh * gw:
            raise AttngradError(
                f"the model has {row.shape[1]} tokens but {trace.num_prefix_tokens} special tokens + a {gh}x{gw} "
                "patch grid were expected; set the adapter's special_tokens for this architecture"
            )
        return patches.reshape(row.shape[0], gh, gw)
