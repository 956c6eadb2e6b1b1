"""Explanations for encoder-decoder Transformers (heterogeneous attention): ``Seq2SeqExplainer``.

The relevance rules of Chefer et al. (ICCV 2021) for self- and cross-attention layers,
written once over named sources (:mod:`attngrad.seq2seq.rules`), with the weightings of
method.md (``complete`` signed, ``gae``, ``absolute``, ``rollout``); a Hugging Face
encoder-decoder adapter (:mod:`attngrad.seq2seq.model`: BART, T5, Marian); the facade
(:mod:`attngrad.seq2seq.explainer`) and the HTML/JSON views (:mod:`attngrad.seq2seq.display`);
co-attention (LXMERT, :mod:`attngrad.seq2seq.coattention`).
"""

from .coattention import (
    CoAttentionExplainer,
    CoAttentionExplanation,
    CoAttentionOutput,
    LxmertAdapter,
)
from .explainer import Seq2SeqExplainer, Seq2SeqExplanation
from .model import Batch, Seq2SeqAdapter, Side
from .rules import (
    SIGNED,
    WEIGHTINGS,
    Relevance,
    encoder_decoder,
    head_mix,
    normalize_self,
)

__all__ = [
    "SIGNED",
    "WEIGHTINGS",
    "Batch",
    "CoAttentionExplainer",
    "CoAttentionExplanation",
    "CoAttentionOutput",
    "LxmertAdapter",
    "Relevance",
    "Seq2SeqAdapter",
    "Seq2SeqExplainer",
    "Seq2SeqExplanation",
    "Side",
    "encoder_decoder",
    "head_mix",
    "normalize_self",
]
