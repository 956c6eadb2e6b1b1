"""Explanation methods and their registry by name."""

from __future__ import annotations

from ..errors import AttngradError
from .attention import AttentionGradCAM, RawAttention
from .base import Method, Trace
from .bi import BeyondIntuitionHead, BeyondIntuitionToken
from .random import RandomBaseline
from .rollout import GAE, Absolute, AttentionRollout, AttentionRolloutEq1, Complete, Rollout, rollout
from .tam import TAM
from .tattr import LRP, PartialLRP, TAttr
from .tis import TIS
from .vitcx import ViTCX

__all__ = [
    "METHODS",
    "GAE",
    "LRP",
    "PartialLRP",
    "TAttr",
    "Absolute",
    "AttentionGradCAM",
    "AttentionRollout",
    "AttentionRolloutEq1",
    "Complete",
    "Method",
    "RandomBaseline",
    "RawAttention",
    "Rollout",
    "Trace",
    "get_method",
    "register",
    "rollout",
]

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Add a method class to the registry under ``cls.name`` (usable as a decorator)."""
    METHODS[cls.name] = cls
    return cls


for _cls in (Complete, GAE, Absolute, AttentionRollout, AttentionRolloutEq1, RawAttention, AttentionGradCAM, RandomBaseline):
    register(_cls)
for _cls in (TAttr, LRP, PartialLRP):  # relevance propagation (Chefer et al., CVPR 2021)
    register(_cls)
for _cls in (TAM, BeyondIntuitionHead, BeyondIntuitionToken, TIS, ViTCX):  # rivals (paper, Figure 13)
    register(_cls)


def get_method(method: str | Method, **options) -> Method:
    """A method instance from a name (options such as ``start_layer`` go to rollout methods) or as is."""
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise AttngradError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    cls = METHODS[method]
    return cls(**options) if issubclass(cls, Rollout) else cls()
