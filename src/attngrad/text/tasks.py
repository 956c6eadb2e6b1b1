"""The three text tasks, each as "logits" of the forwarded batch that the losses act on.

A task says which texts are forwarded, how the model's outputs become a (rows, C)
logit matrix with class names, and which rows of the rollout explain a text:

1. :class:`Classification` — a ``*ForSequenceClassification`` model's own logits;
   the losses of :mod:`attngrad.losses` (a label: ``logit``, eq. 7; label vs label:
   ``normdiff``, eq. 8) and the CLS row, as for images.
2. :class:`Similarity` — a sentence encoder; the single "logit" of text A is
   ``cos(e(A), e(B))``, the cosine similarity of the pooled embeddings (pooled as
   the model's pooling config says). A and B are forwarded in one batch and each
   text's row holds the cosine with the other text's embedding detached, so one
   backward pass gives A's map (why A is close to B) and B's map (the other
   direction), each with the gradient of the cosine through that text alone.
3. :class:`ZeroShot` — a sentence encoder and K labels written as short descriptions;
   logit k is ``cos(e(text), e(label_k))`` (label embeddings fixed, no gradient);
   explain the top label (``logit``) or the top label against the runner-up
   (``normdiff`` with contrast ``"top2"``).

Which rows are read. A classifier (and a CLS-pooled encoder) reads the CLS row of the
rollout ``prod_l (I + E_H(w ⊙ A(l)))``, as for images. A mean-pooled embedding is a
mix of every real token's final state, so every real token's row counts: the map is
the average of the rollout rows of the real tokens with the identity subtracted,
``mean_{i real} (R - I)[i, :]`` (the identity is each token's own residual path, which
would otherwise mark every token as explaining itself).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import AttngradError


class Task:
    """Base class: forwards ``texts`` and explains each of them.

    Attributes:
        name: ``classification``, ``similarity`` or ``zero-shot``.
        labels: names of the logit columns.
    """

    name = ""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)

    def sequences(self, texts: Sequence[str]) -> list[str]:
        """All texts forwarded in the one batch (the explained texts come first)."""
        return list(texts)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """The model's outputs for every forwarded text -> (rows, C) logits."""
        return outputs


class Classification(Task):
    """Class logits of a sequence classifier; ``labels`` from its ``config.id2label``."""

    name = "classification"


class Similarity(Task):
    """Cosine similarity of each text with its partner in ``against`` (one partner per text)."""

    name = "similarity"

    def __init__(self, against: Sequence[str]):
        super().__init__(["similarity"])
        self.against = list(against)
        for i, text in enumerate(self.against):
            if not isinstance(text, str) or not text.strip():
                raise AttngradError(f"text to compare with {i + 1} (--against) is empty; give at least one word")

    def sequences(self, texts: Sequence[str]) -> list[str]:
        against = self.against * len(texts) if len(self.against) == 1 else self.against
        if len(against) != len(texts):
            raise AttngradError(
                f"{len(against)} texts to compare with for {len(texts)} texts; give one per text or one for all"
            )
        return [*texts, *against]

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """Rows 0..n-1: ``cos(A_i, B_i)`` through A; rows n..2n-1: the same cosine through B."""
        a, b = outputs.chunk(2)
        forward = F.cosine_similarity(a, b.detach(), dim=-1)
        backward = F.cosine_similarity(b, a.detach(), dim=-1)
        return torch.cat([forward, backward]).unsqueeze(1)


class ZeroShot(Task):
    """Cosine similarity with each label description's embedding (K, D), fixed (no gradient)."""

    name = "zero-shot"

    def __init__(self, descriptions: Sequence[str], label_embeddings: torch.Tensor):
        super().__init__(descriptions)
        self.label_embeddings = label_embeddings.detach()

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(outputs.unsqueeze(1), self.label_embeddings.unsqueeze(0), dim=-1)


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """``"sports, finance,repair"`` or a list -> clean, distinct label descriptions (at least 2)."""
    items = [s.strip() for s in (labels.split(",") if isinstance(labels, str) else labels)]
    items = [s for s in items if s]
    if len(items) < 2:
        raise AttngradError("zero-shot classification needs at least two labels, e.g. --labels 'sports,finance,repair'")
    seen = {s.lower() for s in items}
    if len(seen) != len(items):
        raise AttngradError(f"labels must be distinct (case-insensitive): {', '.join(items)}")
    return items
