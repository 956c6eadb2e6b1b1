"""Vision–language models (LLaVA-style): signed maps over image patches and prompt tokens."""

from .explainer import READINGS, VLM_METHODS, VLMExplainer, VLMExplanation
from .model import VLMAdapter

__all__ = ["READINGS", "VLM_METHODS", "VLMAdapter", "VLMExplainer", "VLMExplanation"]
