"""Explanation methods and their registry by name.

Each method class registers itself at its definition (``@register``, from
:mod:`attngrad.methods.base`); importing its module here is what makes it available.
"""

from __future__ import annotations

from .base import METHODS, Method, Trace, get_method, is_signed, method_options, register

# The import order is the registry's order (lists, help, the explorer): the paper's family first.
from .rollout import GAE, Absolute, AttentionRollout, AttentionRolloutEq1, Complete, Rollout, rollout  # isort: skip
from .attention import AttentionGradCAM, RawAttention  # isort: skip
from .random import RandomBaseline  # isort: skip
from .tattr import LRP, PartialLRP, TAttr  # isort: skip
from .tam import TAM  # isort: skip
from .bi import BeyondIntuitionHead, BeyondIntuitionToken  # isort: skip
from .tis import TIS  # isort: skip
from .vitcx import ViTCX  # isort: skip
from .dix import DIX  # isort: skip
from .ig import GradXInput, IntegratedGradients  # isort: skip

__all__ = [
    "METHODS",
    "GAE",
    "LRP",
    "PartialLRP",
    "TAttr",
    "Absolute",
    "BeyondIntuitionHead",
    "BeyondIntuitionToken",
    "DIX",
    "GradXInput",
    "IntegratedGradients",
    "TAM",
    "TIS",
    "ViTCX",
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
    "is_signed",
    "method_options",
    "register",
    "rollout",
]
