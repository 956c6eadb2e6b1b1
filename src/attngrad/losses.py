"""Losses: the scalar per image whose gradient with respect to the attention maps is explained.

Every loss maps ``(logits (B, C), targets (B,), contrasts (B,) or None)`` to a
tensor ``(B,)``. The gradient, and with it the map, depends on the loss
(Cui, Fan & Chen, Sec. "Loss functions", eqs. 7-8).
"""

from __future__ import annotations

import inspect
from typing import Callable, Protocol, Sequence, Union

import torch

from .errors import AttngradError


class Loss(Protocol):
    name: str
    needs_contrast: bool

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, contrasts: torch.Tensor | None) -> torch.Tensor: ...


def _pick(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, index.view(-1, 1)).squeeze(1)


class TargetLogit:
    """``logit[t]`` — eq. 7, the default."""

    name = "logit"
    needs_contrast = False

    def __call__(self, logits, targets, contrasts=None):
        return _pick(logits, targets)


class NormalizedDifference:
    """``(logit[t1] - logit[t2]) / logit[t1]`` — eq. 8, detail interpretation."""

    name = "normdiff"
    needs_contrast = True

    def __call__(self, logits, targets, contrasts):
        t1 = _pick(logits, targets)
        return (t1 - _pick(logits, contrasts)) / t1


class Difference:
    """``logit[t1] - logit[t2]``."""

    name = "diff"
    needs_contrast = True

    def __call__(self, logits, targets, contrasts):
        return _pick(logits, targets) - _pick(logits, contrasts)


class Ratio:
    """``logit[t1] / logit[t2]``."""

    name = "ratio"
    needs_contrast = True

    def __call__(self, logits, targets, contrasts):
        return _pick(logits, targets) / _pick(logits, contrasts)


class CallableLoss:
    """A user's callable: ``f(logits)``, ``f(logits, targets)`` or ``f(logits, targets, contrasts)`` -> (B,)."""

    needs_contrast = False

    def __init__(self, fn: Callable[..., torch.Tensor]):
        self.fn = fn
        self.name = getattr(fn, "__name__", "custom")
        params = inspect.signature(fn).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
        self.arity = 3 if varargs else min(len(positional), 3)

    def __call__(self, logits, targets, contrasts=None):
        out = self.fn(*(logits, targets, contrasts)[: self.arity])
        if not isinstance(out, torch.Tensor) or out.shape != (logits.shape[0],):
            raise AttngradError(
                f"loss {self.name} must return a tensor of shape ({logits.shape[0]},), one value per image"
            )
        return out


LOSSES: dict[str, type] = {cls.name: cls for cls in (TargetLogit, NormalizedDifference, Difference, Ratio)}

LossLike = Union[str, Callable[..., torch.Tensor]]


def get_loss(loss: LossLike) -> Loss:
    """Resolve a loss name (``logit``, ``normdiff``, ``diff``, ``ratio``) or wrap a callable."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise AttngradError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)} or pass a callable", field="loss", choices=LOSSES)
        return LOSSES[loss]()
    if hasattr(loss, "needs_contrast") and hasattr(loss, "name"):
        return loss  # already a Loss object
    if callable(loss):
        return CallableLoss(loss)
    raise AttngradError(f"loss must be a name or a callable, not {type(loss).__name__}")


def check_contrast(loss_fn: Loss, contrast: object, *, what: str = "class") -> None:
    """Refuse a contrast given to a loss that never reads it (``logit``, or a callable of fewer than three
    arguments): the map would silently be the one-class map the user did not ask for."""
    reads = loss_fn.needs_contrast or getattr(loss_fn, "arity", 0) >= 3
    if contrast is not None and not reads:
        two = [n for n in LOSSES if get_loss(n).needs_contrast]
        raise AttngradError(
            f"a contrast {what} needs a two-{what} loss ({', '.join(two)}), not {loss_fn.name!r}: choose one of those "
            "losses, or drop the contrast",
            field="loss", choices=two,
        )


#: Methods whose maps read neither the loss nor a contrast (attention alone, or noise), in every model family.
LOSS_FREE = frozenset({"rollout", "rollout_eq1", "raw_attention", "random"})


def check_loss_is_read(methods: Sequence[str], loss: object, contrast: object) -> None:
    """Refuse a contrast or a loss other than ``logit`` when no chosen method reads it: the maps would be the same
    without it, yet be labelled "X rather than Y"."""
    names = [str(m) for m in methods]
    if names and all(n in LOSS_FREE for n in names) and (contrast is not None or loss not in (None, "logit")):
        raise AttngradError(
            f"{', '.join(names)} read{'s' if len(names) == 1 else ''} neither the loss nor a contrast (attention alone, or "
            "noise): the map would be the same without them; add a gradient method (complete, gae) or drop them",
            field="loss",
        )
