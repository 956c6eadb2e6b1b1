"""The model contract: what every adapter offers the methods, and what image adapters add.

:class:`ModelAdapter` is modality-neutral: a forward pass returning the model's output
scores and every layer's attention maps *in the autograd graph*, a way to replace those
maps (attention transfer), the special tokens leading the sequence, the layer count and
the device. Text, language-model and CLIP adapters implement it.

:class:`ImageAdapter` adds what only images have: a preprocessor (images ->
``pixel_values``) and a patch grid. The image Explainer needs one.

An adapter wraps a real, unmodified model (Hugging Face or timm). It never knows which
method asked; methods never know which model family they run on. Adapters are found for a
model through :mod:`attngrad.models.registry` (see docs/adding-a-model-family.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from .preprocess import Preprocessor


@dataclass
class ForwardOutput:
    """Logits (B, C) and, per layer, attention probabilities (B, H, N, N) kept in the autograd graph."""

    logits: torch.Tensor
    attentions: list[torch.Tensor]


@contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """No gradients to ``module``'s weights inside the block; each ``requires_grad`` is restored
    afterwards, also on errors."""
    weights = list(module.parameters())
    trainable = [w.requires_grad for w in weights]
    try:
        for w in weights:
            w.requires_grad_(False)
        yield
    finally:
        for w, flag in zip(weights, trainable):
            w.requires_grad_(flag)


class ModelAdapter(ABC):
    """Uniform, modality-neutral view of a Transformer whose attention maps are explained.

    Attributes:
        model: the wrapped ``nn.Module`` (put in eval mode, weights untouched).
        labels: names of the output columns (class names), index order.
        special_tokens: names of the non-content tokens that lead the sequence, with their index
            (``{"cls": 0}``; DeiT distilled adds ``"distillation": 1``; registers follow).
    """

    model: nn.Module
    labels: list[str]
    special_tokens: dict[str, int]

    @abstractmethod
    def forward(self, inputs: Any, *args: Any, **kwargs: Any) -> ForwardOutput:
        """Run the model on a batch; return logits and every layer's attention maps (after softmax).

        The input is the modality's own (``pixel_values`` for images, token embeddings plus an
        attention mask or batch for text); adapters narrow the signature to what they take.
        """

    @abstractmethod
    def override_attention(self, maps: Sequence[torch.Tensor | None]) -> AbstractContextManager[None]:
        """Context in which the model uses ``maps[l]`` instead of softmax(QK^T) in layer ``l``
        (``None``: layer ``l`` computes its own attention).

        Used by attention transfer (paper, experiment 2) and DIX (one layer replaced). With the model's own maps the
        logits are reproduced exactly. The state lives in the context (per call), never in
        a module-level global, so two adapters never share it.
        """

    @property
    def num_layers(self) -> int:
        """Number of attention layers (maps returned by :meth:`forward`)."""
        config = getattr(self.model, "config", None)
        layers = getattr(config, "num_hidden_layers", None)
        if layers is None:
            raise AttngradError(f"{type(self).__name__} does not know its layer count; set num_layers")
        return int(layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.special_tokens)

    def frozen_weights(self) -> AbstractContextManager[None]:
        """No gradients to the weights inside the block (experiments optimise pixels or maps);
        each weight's ``requires_grad`` is restored afterwards, also on errors."""
        return frozen_parameters(self.model)

    def grid(self, inputs: torch.Tensor) -> tuple[int, int]:
        """Shape ``(rows, cols)`` of a map for this input: one row of content tokens for a
        sequence ``(B, N, D)``. Image adapters return the patch grid."""
        return 1, inputs.shape[1] - self.num_prefix_tokens

    def token_index(self, token: int | str) -> int | slice:
        """Resolve a token name ("cls", "distillation") or index to the row read by the methods.

        Image adapters return an index; adapters whose output pools every token (text
        encoders, CLIP towers) may return a slice (the sum of those rows is read)."""
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


class ImageAdapter(ModelAdapter):
    """An image classifier: :class:`ModelAdapter` plus a preprocessor and a patch grid.

    Attributes:
        preprocessor: how images become ``pixel_values``, from the model's own config.
        patch_size: ``(ph, pw)`` in pixels.
    """

    preprocessor: Preprocessor
    patch_size: tuple[int, int]

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> ForwardOutput:
        """Run the model on ``pixel_values`` (B, 3, H, W); logits and every layer's attention maps."""

    def grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` for an input of this size."""
        return pixel_values.shape[-2] // self.patch_size[0], pixel_values.shape[-1] // self.patch_size[1]
