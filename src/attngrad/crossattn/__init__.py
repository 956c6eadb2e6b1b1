"""Cross-attention (heterogeneous attention): Chefer et al.'s bi-modal / encoder-decoder rules
with the signed weighting, and encoder-decoder models (BART, T5, Marian). Experimental: run on
tiny random configs only."""

from .rules import WEIGHTINGS, Relevance, head_mean, normalized_self
from .seq2seq import Seq2SeqExplainer, Seq2SeqExplanation

__all__ = ["WEIGHTINGS", "Relevance", "Seq2SeqExplainer", "Seq2SeqExplanation", "head_mean", "normalized_self"]
