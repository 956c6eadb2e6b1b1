"""Vision–language models (LLaVA-style): signed maps over image patches and prompt tokens."""

from .contrast import against_the_others, mean_contrast
from .explainer import READINGS, VLM_METHODS, VLMExplainer, VLMExplanation
from .model import VLMAdapter

__all__ = ["READINGS", "VLM_METHODS", "VLMAdapter", "VLMExplainer", "VLMExplanation", "against_the_others",
           "mean_contrast"]
