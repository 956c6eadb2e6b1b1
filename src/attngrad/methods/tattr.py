"""T-Attr and its LRP baselines (Chefer, Gur & Wolf, CVPR 2021) on real Hugging Face / timm ViTs.

- ``tattr``: ``Abar(l) = E_H(max(grad A(l) * R_A(l), 0))``, renormalised rollout with ``I``
  added, read at the CLS row (method.md, "T-Attr", step 3);
- ``partial_lrp``: the last layer's ``R_A``, positive part, head mean, CLS row;
- ``lrp``: the relevance carried on to the pixels (z^B first layer), summed over channels:
  a pixel-level map (B, H, W). Option ``epsilon`` (default 0: the reference code's rules):
  LRP-epsilon on the signed z-rule denominators, which steadies the map against tiny input
  changes (docs/results/lrp-stability.md).

The relevance ``R_A(l)`` comes from :mod:`attngrad.methods.relprop`; activations are
recorded by hooks during the Explainer's one forward pass and one propagation pass serves
every relevance method sharing a trace.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterator

import torch

from ..errors import AttngradError
from ..models.base import ModelAdapter
from ._common import check_range, gradients
from .base import Method, Trace, register
from .relprop import Relevance, propagate, record_activations
from .rollout import Rollout, rollout

_RECORD = "relprop.recording"
_RESULT = "relprop.relevance"


class _RelevanceMethod(Method):
    """Shared plumbing: record activations during the forward pass, propagate once per trace."""

    #: LRP-epsilon on the signed z-rule denominators (:func:`.relprop.propagate`); 0: the reference rules.
    epsilon: float = 0.0

    def capture(self, adapter: ModelAdapter, extras: dict[str, Any]) -> AbstractContextManager[None]:
        if _RECORD in extras:  # another relevance method of the same pass already records
            return nullcontext()
        return _recording(adapter, extras)

    def stop_layer(self, trace: Trace) -> int:
        """Lowest layer whose ``R_A`` this method needs (``-1``: the pixels)."""
        raise NotImplementedError

    def relevance(self, trace: Trace) -> Relevance:
        """The propagation for ``trace``, computed once per ``epsilon`` and reused by methods that need no deeper one."""
        stop = self.stop_layer(trace)
        key = f"{_RESULT}:{self.epsilon!r}"
        cached = trace.extras.get(key)
        if cached is None or cached.stop_layer > stop:
            cached = propagate(trace.extras[_RECORD], trace.attentions, trace.targets, stop, epsilon=self.epsilon)
            trace.extras[key] = cached
        return cached


def _propagated(relevance: torch.Tensor | None, where: str) -> torch.Tensor:
    """A relevance the propagation reached; ``None`` means it stopped above ``where``."""
    if relevance is None:
        raise AttngradError(f"the relevance propagation stopped before {where}; propagate down to it first")
    return relevance


@contextmanager
def _recording(adapter: ModelAdapter, extras: dict[str, Any]) -> Iterator[None]:
    with record_activations(adapter.model) as rec:
        extras[_RECORD] = rec
        yield


@register
class TAttr(_RelevanceMethod, Rollout):
    """Transformer attribution (T-Attr): rollout of ``E_H(max(grad A * R_A, 0))``, rows renormalised.

    The gradient is that of the Explainer's loss (the target logit by default, as in the
    reference code); the relevance starts one-hot at the target class.
    """

    name = "tattr"
    description = "T-Attr (Chefer et al., CVPR 2021): rollout of positive gradient x LRP relevance"
    default_renormalize = True

    def stop_layer(self, trace: Trace) -> int:
        return self.first_layer(trace)

    def token_scores(self, trace: Trace) -> torch.Tensor:
        start = self.first_layer(trace)
        r_attn = self.relevance(trace).attention
        mixes = [(g * _propagated(r, "start_layer")).clamp(min=0).mean(dim=1) for g, r in
                 zip(gradients(trace, self.name, start), r_attn[start:])]
        return rollout(mixes, trace.token, self.renormalize)


@register
class LRP(_RelevanceMethod):
    """Full LRP to the pixels (z^B first layer), summed over channels: a (B, H, W) map.

    Args:
        epsilon: added as ``epsilon * sign(z)`` to the signed z-rule denominators (residual sums,
            ``A V``, ``Q K^T``); 0 (default) is the reference code. Without it the map can change
            entirely with input changes of 1e-5; 0.01 steadies it on ViT-Ti (docs/results/lrp-stability.md).
    """

    name = "lrp"
    description = "full LRP to the pixels (z^B first layer): signed pixel-level relevance"
    signed = True
    needs_gradients = False

    def __init__(self, *, epsilon: float = 0.0):
        check_range(self.name, "epsilon", epsilon, 0.0, float("inf"))
        self.epsilon = float(epsilon)

    def stop_layer(self, trace: Trace) -> int:
        return -1

    def __call__(self, trace: Trace) -> torch.Tensor:
        return _propagated(self.relevance(trace).pixels, "the pixels").sum(dim=1)


@register
class PartialLRP(_RelevanceMethod):
    """Partial LRP: the last layer's ``R_A``, positive part, head mean, read row."""

    name = "partial_lrp"
    description = "partial LRP: the last layer's attention relevance, positive part"
    needs_gradients = False

    def stop_layer(self, trace: Trace) -> int:
        return len(trace.attentions) - 1

    def token_scores(self, trace: Trace) -> torch.Tensor:
        last = _propagated(self.relevance(trace).attention[-1], "the last layer")
        return last.clamp(min=0).mean(dim=1)[:, trace.token]
