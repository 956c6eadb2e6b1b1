"""Signed token-level explanations for Hugging Face BERT-family text models.

``TextExplainer`` explains a ``*ForSequenceClassification`` classifier (a label, or label
vs label), a sentence encoder's similarity between two texts, and zero-shot
classification with label descriptions, with the registered methods (``complete``,
``gae``, ``rollout``, ...) and losses of the image side. See :mod:`attngrad.text.tasks`
for which rows are read, :mod:`attngrad.text.display` for the views and
:mod:`attngrad.text.deletion` for the token-deletion test.
"""

from .display import Word, merge_words, save_html, save_json, terminal, to_html, to_records
from .explainer import TEXT_METHOD_TYPES, TextExplainer, TruncationWarning, default_model
from .model import Pooling, TextAdapter
from .results import Encoded, TextExplanation
from .tasks import Classification, Similarity, Task, ZeroShot, parse_labels

__all__ = [
    "TEXT_METHOD_TYPES",
    "Classification",
    "Encoded",
    "Pooling",
    "Similarity",
    "Task",
    "TextAdapter",
    "TextExplainer",
    "TextExplanation",
    "TruncationWarning",
    "Word",
    "ZeroShot",
    "default_model",
    "merge_words",
    "parse_labels",
    "save_html",
    "save_json",
    "terminal",
    "to_html",
    "to_records",
]
