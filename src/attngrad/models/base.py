"""What every model adapter offers the methods: logits and attention maps, differentiably.

An adapter wraps a real, unmodified model (Hugging Face or timm). It never
knows which method asked; methods never know which model family they run on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from .preprocess import Preprocessor


@dataclass
class ForwardOutput:
    """Logits (B, C) and, per layer, attention probabilities (B, H, N, N) kept in the autograd graph."""

    logits: torch.Tensor
    attentions: list[torch.Tensor]


class ModelAdapter(ABC):
    """Uniform view of a Vision Transformer classifier.

    Attributes:
        model: the wrapped ``nn.Module`` (put in eval mode, weights untouched).
        preprocessor: how images become ``pixel_values``, from the model's own config.
        labels: class names, index order.
        special_tokens: names of the non-patch tokens that lead the sequence, with their index
            (``{"cls": 0}``; DeiT distilled adds ``"distillation": 1``).
        patch_size: ``(ph, pw)`` in pixels.
    """

    model: nn.Module
    preprocessor: Preprocessor
    labels: list[str]
    special_tokens: dict[str, int]
    patch_size: tuple[int, int]

    @contextmanager
    def frozen_weights(self) -> Iterator[None]:
        """No gradients to the weights inside the block (experiments optimise pixels or maps);
        each weight's ``requires_grad`` is restored afterwards, also on errors."""
        weights = list(self.model.parameters())
        trainable = [w.requires_grad for w in weights]
        try:
            for w in weights:
                w.requires_grad_(False)
            yield
        finally:
            for w, flag in zip(weights, trainable):
                w.requires_grad_(flag)

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> ForwardOutput:
        """Run the model; return logits and every layer's attention maps (after softmax)."""

    @abstractmethod
    def override_attention(self, maps: Sequence[torch.Tensor]) -> AbstractContextManager[None]:
        """Context in which the model uses ``maps[l]`` instead of softmax(QK^T) in layer ``l``.

        Used by attention transfer (paper, experiment 2). With the model's own maps the
        logits are reproduced exactly.
        """

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.special_tokens)

    def grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` for an input of this size."""
        return pixel_values.shape[-2] // self.patch_size[0], pixel_values.shape[-1] // self.patch_size[1]

    def token_index(self, token: int | str) -> int:
        """Resolve a token name ("cls", "distillation") or index to the row read by the methods."""
        if isinstance(token, int):
            if not 0 <= token < self.num_prefix_tokens:
                raise AttngradError(
                    f"token {token} is not a special token of this model; use one of {self.special_tokens}"
                )
            return token
        key = token.lower()
        if key == "dist":
            key = "distillation"
        if key not in self.special_tokens:
            raise AttngradError(f"unknown token {token!r}; this model has {sorted(self.special_tokens)}")
        return self.special_tokens[key]

    def check_attentions(self, attentions: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
        if not attentions or any(a is None for a in attentions):
            raise AttngradError(
                f"{type(self.model).__name__} returned no attention maps; use a Transformer with standard "
                "self-attention (ViT, DeiT, BEiT) loaded with eager attention"
            )
        return list(attentions)
