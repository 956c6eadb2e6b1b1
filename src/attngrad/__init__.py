"""attngrad: explain what a Transformer looked at, from its attention maps and their gradients.

Implements Cui, Fan & Chen, "Transformer Interpretability from Perspective of
Attention and Gradient" (arXiv 2605.11392) — the signed ``complete`` map —
with the methods it builds on (rollout, GAE) and competes with.
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import AttngradError
from .explainer import Explainer, Explanation, Prediction
from .io import load_image
from .losses import LOSSES, get_loss
from .methods import METHODS, Method, Trace, get_method, rollout
from .models import DEFAULT_MODEL, ModelAdapter, load_model, wrap_model
from .results import Result, Spot
from .targets import class_index, resolve_targets

__all__ = [
    "DEFAULT_MODEL",
    "LOSSES",
    "METHODS",
    "AttngradError",
    "ClipExplainer",
    "Explainer",
    "Explanation",
    "LMExplainer",
    "Method",
    "ModelAdapter",
    "Prediction",
    "Result",
    "Seq2SeqExplainer",
    "Spot",
    "TextExplainer",
    "Trace",
    "VLMExplainer",
    "class_index",
    "get_loss",
    "get_method",
    "load_image",
    "load_model",
    "resolve_targets",
    "rollout",
    "wrap_model",
]
try:
    __version__ = version("attngrad")  # written once, in pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


_LAZY = {
    "TextExplainer": "text",
    "ClipExplainer": "clip",
    "LMExplainer": "lm",
    "Seq2SeqExplainer": "seq2seq",
    "VLMExplainer": "vlm",
}


def __getattr__(name: str):
    """The explainers of the other model families import their packages only when used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'attngrad' has no attribute {name!r}")
