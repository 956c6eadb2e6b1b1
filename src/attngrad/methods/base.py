"""The interface every explanation method implements, and the pass they share.

One forward and (when any method needs it) one backward pass over a batch fill a
:class:`Trace`; a :class:`Method` turns a trace into one map per image. Several
methods can share one trace, so comparing methods costs one pass.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

from ..errors import AttngradError
from ..models.base import ModelAdapter

#: The gradient of a layer below where the shared backward pass stopped (:meth:`Method.gradient_start`).
NOT_COMPUTED = torch.empty(0)


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
        token: index of the row read (0 = CLS), or a slice whose rows are summed (pooled text outputs).
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
    token: int | slice
    num_prefix_tokens: int
    grid: tuple[int, int]
    adapter: ModelAdapter
    extras: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class: subclasses set ``name`` and implement :meth:`token_scores` (or :meth:`__call__`).

    Options a method takes are its ``__init__`` keyword arguments (see :func:`get_method`).

    Class attributes:
        name: registry name.
        description: one line, shown in the CLI's help and the explorer.
        signed: ``True`` when the map's sign means support (+) or opposition (-) for the
            target; ``False`` for magnitudes (the map is >= 0 or its sign carries no meaning).
        needs_gradients: whether the shared pass must backpropagate the loss to the maps.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    signed: ClassVar[bool] = False
    needs_gradients: ClassVar[bool] = True

    def capture(self, adapter: ModelAdapter, extras: dict[str, Any]) -> AbstractContextManager[None]:
        """Context active during the forward pass; may record activations into ``extras``."""
        return nullcontext()

    def token_scores(self, trace: Trace) -> torch.Tensor:
        """Scores (B, N) over all tokens: the read row of the method's token-mixing matrix."""
        raise NotImplementedError

    def gradient_start(self, num_layers: int) -> int:
        """The lowest layer whose attention gradient the method reads: the shared backward pass stops
        there (a method of the last layer costs one block's backward, not the model's). Default: 0."""
        return 0

    def scores(self, trace: Trace) -> torch.Tensor:
        """:meth:`token_scores`, refused with :class:`AttngradError` when any value is NaN or infinite
        (an option or a loss that breaks the maths never returns a map silently)."""
        row = self.token_scores(trace)
        if not bool(torch.isfinite(row).all()):
            raise AttngradError(f"{self.name} gave a map with NaN or infinite values; check its options "
                                "(for example a noise or step size out of range) and the loss")
        return row

    def __call__(self, trace: Trace) -> torch.Tensor:
        """The map (B, gh, gw) over the patch grid: :meth:`token_scores` without the special tokens."""
        row = self.scores(trace)
        gh, gw = trace.grid
        patches = row[:, trace.num_prefix_tokens :]
        if patches.shape[1] != gh * gw:
            raise AttngradError(
                f"the model has {row.shape[1]} tokens but {trace.num_prefix_tokens} special tokens + a {gh}x{gw} "
                "patch grid were expected; set the adapter's special_tokens for this architecture"
            )
        return patches.reshape(row.shape[0], gh, gw)


#: Registered methods by name (filled by :func:`register` at each class definition).
METHODS: dict[str, type[Method]] = {}

M = TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    """Class decorator: add a method class to :data:`METHODS` under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name; set the class attribute `name` before registering")
    METHODS[cls.name] = cls
    return cls


def is_signed(method: str | None) -> bool | None:
    """Whether the maps of a registered method are signed (its class's ``signed``); ``None`` for an unknown name."""
    if method is None or method not in METHODS:
        return None
    return bool(METHODS[method].signed)


def method_options(cls: type[Method]) -> list[str]:
    """Names of the options (keyword arguments of ``__init__``) a method class takes."""
    if cls.__init__ is object.__init__:
        return []
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def get_method(method: str | Method, **options: Any) -> Method:
    """A method instance from a registered name, with its options by name (or a :class:`Method` as is).

    ``None`` options are left out (the method's own default applies). An option the method
    does not take raises :class:`AttngradError` naming those it does.
    """
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise AttngradError(
            f"unknown method {method!r}; choose from {', '.join(METHODS)}", field="method", choices=list(METHODS)
        )
    cls = METHODS[method]
    given = {k: v for k, v in options.items() if v is not None}
    valid = method_options(cls)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        takes = f"it takes {', '.join(valid)}" if valid else "it takes no options"
        raise AttngradError(f"method {method!r} has no option {', '.join(unknown)}; {takes}")
    return cls(**given)
