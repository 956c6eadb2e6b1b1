"""Small checks shared by the rival methods (TAM, BI, TIS, ViT-CX, DIX)."""

from __future__ import annotations

from ..errors import AttngradError


def check_layer(name: str, start_layer: int, layers: int) -> None:
    """Refuse a start layer outside ``0..layers-1`` (our 0-based count)."""
    if not 0 <= start_layer < layers:
        raise AttngradError(
            f"{name}: start_layer {start_layer} is out of range; this model has layers 0..{layers - 1} "
            "(counted from 0); pass a smaller start_layer"
        )


def check_positive(name: str, **values: int) -> None:
    """Refuse counts below 1 (steps, masks, batch sizes)."""
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise AttngradError(f"{name}: {key} must be a positive integer, not {value!r}")
