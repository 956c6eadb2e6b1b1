"""What the text explainer returns: the encoded batch and the token maps (:class:`TextExplanation`)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ..results import MapResult
from .display import Word, merge_words


@dataclass
class Encoded:
    """A tokenised, right-padded batch.

    Attributes:
        texts: the texts.
        input_ids, attention_mask: (B, N); the mask is 1 on real tokens (special tokens included).
        content: (B, N) bool, real tokens that are not special tokens (the ones a map scores).
        tokens: per text, its real tokens (word pieces, special tokens included).
        word_ids: per text and real token, the index of the word it belongs to (``None``: special).
        offsets: per text and real token, its character span ``(start, end)`` in the text.
    """

    texts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    content: torch.Tensor
    tokens: list[list[str]]
    word_ids: list[list[int | None]]
    offsets: list[list[tuple[int, int]]]

    def rows(self, index: slice) -> "Encoded":
        """The texts in ``index`` (tensors keep the batch's padded length)."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})  # subclasses too


@dataclass
class TextExplanation(MapResult):
    """Token maps for a batch of texts, with what produced them (the text counterpart of ``Explanation``).

    Attributes:
        maps: (B, N) raw scores over token positions (unnormalised, sign kept); 0 at special
            tokens and padding.
        encoded: the texts, tokens, word ids, offsets and masks.
        logits: (B, C) the task's logits (class logits, or cosine similarities).
        targets, contrasts: (B,) explained columns (contrasts for two-class losses, else ``None``).
        method, loss, task: names.
        labels: names of the logit columns.
        against: for similarity, the texts compared with; ``reverse`` holds their maps (the other
            direction), from the same pass.

    As a :class:`~attngrad.results.Result`: an item is a text, its positions its real tokens
    (``encoded.tokens[i]``, special tokens included, padding not); :meth:`top` never lists a special token.
    """

    maps: torch.Tensor
    encoded: Encoded
    logits: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    method: str
    loss: str
    task: str
    labels: list[str]
    against: list[str] | None = None
    reverse: "TextExplanation | None" = None

    @property
    def texts(self) -> list[str]:
        return self.encoded.texts

    def scores(self, index: int) -> torch.Tensor:
        """Text ``index``'s raw scores over its real tokens, in order (1-D; 0 at special tokens)."""
        return self.maps[index, : len(self.encoded.tokens[index])]

    def position_names(self, index: int) -> list[str]:
        return list(self.encoded.tokens[index])

    def _ranked(self, index: int) -> torch.Tensor:
        return self.encoded.content[index, : len(self.encoded.tokens[index])]

    def token_scores(self, index: int) -> list[tuple[str, float]]:
        """``(word piece, raw score)`` for the scored tokens of text ``index``, in order."""
        real = len(self.encoded.tokens[index])
        keep = self.encoded.content[index, :real].tolist()
        scores = self.maps[index, :real].tolist()
        return [(t, s) for t, s, k in zip(self.encoded.tokens[index], scores, keep) if k]

    def words(self, index: int) -> list[Word]:
        """Text ``index`` as words with scores: word pieces merged (summed) back into words."""
        e = self.encoded
        real = len(e.tokens[index])
        return merge_words(e.texts[index], e.tokens[index], self.maps[index, :real].tolist(), e.word_ids[index],
                           e.offsets[index], e.content[index, :real].tolist())
