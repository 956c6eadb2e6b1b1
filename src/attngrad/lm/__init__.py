"""Signed explanations of causal language models' next tokens and generated text.

``LMExplainer`` explains why a decoder-only Transformer (SmolLM2 by default, from
``attngrad[lm]``; any Hugging Face Llama / Qwen2 / Mistral / GPT-2 causal LM) predicts a
token — or that token rather than another — from its attention maps and their gradients
(Cui, Fan & Chen; method.md), with ``complete``, ``gae``, ``absolute``, ``rollout``,
``raw_attention``, and ``grad_x_input`` as the classic baseline. See docs/lm.md.
"""

from .attribution import LM_METHODS, check_methods, signed
from .display import save_generation_html, save_html, save_json, terminal
from .explainer import GenerationExplanation, LMExplainer, LMExplanation, MultiTokenWarning
from .model import Batch, LMAdapter, cache_dir, default_model

__all__ = [
    "LM_METHODS",
    "Batch",
    "GenerationExplanation",
    "LMAdapter",
    "LMExplainer",
    "LMExplanation",
    "MultiTokenWarning",
    "cache_dir",
    "check_methods",
    "default_model",
    "save_generation_html",
    "save_html",
    "save_json",
    "signed",
    "terminal",
]
