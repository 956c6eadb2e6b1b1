"""Small checks shared by the rival methods (TAM, BI, TIS, ViT-CX, DIX)."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import AttngradError
from ..models.base import ImageAdapter, ModelAdapter
from .base import NOT_COMPUTED, Trace


def check_layer(name: str, start_layer: int, layers: int) -> None:
    """Refuse a start layer outside ``0..layers-1`` (our 0-based count)."""
    if not 0 <= start_layer < layers:
        raise AttngradError(
            f"{name}: start_layer {start_layer} is out of range; this model has layers 0..{layers - 1} "
            "(counted from 0); pass a smaller start_layer"
        )


def resolve_layer(start_layer: int | None, default: int, layers: int) -> int:
    """The start layer to use: the one given, else the authors' ``default`` (for their 12-block
    ViTs), brought down to the last layer on a model with fewer blocks."""
    return min(default, layers - 1) if start_layer is None else start_layer


#: The largest count an option may take (steps, masks, batch sizes): beyond it a run cannot fit any machine.
MAX_COUNT = 1_000_000


def check_positive(name: str, **values: int) -> None:
    """Refuse counts below 1 or above :data:`MAX_COUNT` (steps, masks, batch sizes)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
            raise AttngradError(f"{name}: {key} must be an integer from 1 to {MAX_COUNT:,}, not {value!r}")


def check_range(name: str, key: str, value: float, low: float, high: float, *, open_low: bool = False) -> None:
    """Refuse a real option outside ``[low, high]`` (``(low, high]`` with ``open_low``), NaN and infinities included."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bounds = (f"> {low}" if open_low else f">= {low}") if math.isinf(high) else \
            f"in {'(' if open_low else '['}{low}, {high}]"
        raise AttngradError(f"{name}: {key} must be a number {bounds} (finite), not {value!r}")


def image_adapter(trace: Trace, name: str) -> ImageAdapter:
    """The trace's adapter when it is an image classifier (the patch grid is needed)."""
    if not isinstance(trace.adapter, ImageAdapter):
        raise AttngradError(f"{name}: explains image classifiers only (an ImageAdapter), not {type(trace.adapter).__name__}")
    return trace.adapter


def gradients(trace: Trace, name: str, start: int = 0) -> list[torch.Tensor]:
    """The trace's attention gradients of layers ``start`` and up (all by default); refused for a trace
    made without the backward pass, or whose backward pass stopped above ``start``."""
    if trace.gradients is None:
        raise AttngradError(f"{name}: the trace has no attention gradients; make it with a method that needs them")
    found = trace.gradients[start:]
    if any(g is NOT_COMPUTED for g in found):
        raise AttngradError(f"{name}: the trace's backward pass stopped above layer {start}; make the trace with "
                            "this method among its methods")
    return found


Recorder = Callable[[nn.Module, list], AbstractContextManager[None]]


@contextmanager
def recording(adapter: ModelAdapter, extras: dict[str, Any], key: str, recorder: Recorder) -> Iterator[None]:
    """A :meth:`Method.capture` body: ``recorder(model, store)`` fills ``extras[key]`` during the
    shared forward pass (once, however many methods of the pass ask for it)."""
    if key in extras:
        yield
        return
    store: list = []
    extras[key] = store
    with recorder(adapter.model, store):
        yield


def recorded(trace: Trace, key: str, recorder: Recorder) -> list:
    """What :func:`recording` stored in the trace, or (for a trace made without it) the same
    from one more forward pass."""
    store = trace.extras.get(key)
    if not store:
        store = []
        with torch.no_grad(), recorder(trace.adapter.model, store):
            trace.adapter.forward(trace.pixel_values)
    return store
