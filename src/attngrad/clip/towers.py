"""The two towers of an image–text model, each seen as "input -> embedding + attention maps".

A tower wraps a real, unmodified Hugging Face encoder and a projection. The image tower
reads one token (CLS) over a patch grid; the text tower reads either one token per text
(CLIP pools at the end-of-text token, whose position differs per text) or every real token
(a mean-pooled sentence encoder such as all-MiniLM-L6-v2).

Both are adapters of the modality-neutral model contract (:mod:`attngrad.models.base`); the
image tower is an ``ImageAdapter``. They are not in the adapter registry: a tower needs its
projection (and the text tower its tokenizer), which a bare model does not carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from ..errors import AttngradError, refuse_unknown_text
from ..models.base import ForwardOutput, ImageAdapter
from ..models.hf import HFModelAdapter, ensure_eager
from ..models.preprocess import Preprocessor
from ..text.results import Encoded

Pool = Callable[[object, torch.Tensor | None], torch.Tensor]


@dataclass
class AttentionParts:
    """The last attention layer's linear maps: queries, keys, values and the output projection.

    ``out``'s *input* is the heads' outputs concatenated, ``o_i = concat_h sum_j A^h[i, j] v_j^h``.
    """

    query: nn.Module
    key: nn.Module
    value: nn.Module
    out: nn.Module
    heads: int


def last_attention_parts(model: nn.Module) -> AttentionParts:
    """Find the last self-attention layer's q/k/v/out linear maps of a Hugging Face encoder.

    Two layouts are known: ``q_proj, k_proj, v_proj`` and ``out_proj`` (CLIP, BART) or ``o_proj``
    (ViT in transformers 5) in one module, and ``query, key, value`` with the output projection at ``<parent>.output.dense``
    (ViT, DeiT, BERT, MiniLM).
    """
    heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
    last = None
    for name, module in model.named_modules():
        out = getattr(module, "out_proj", None) or getattr(module, "o_proj", None)
        if out is not None and all(hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj")):
            last = AttentionParts(module.q_proj, module.k_proj, module.v_proj, out, int(heads or 0))
        elif all(isinstance(getattr(module, a, None), nn.Linear) for a in ("query", "key", "value")):
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            try:
                out = model.get_submodule(f"{parent}.output.dense" if parent else "output.dense")
            except AttributeError:
                continue
            last = AttentionParts(module.query, module.key, module.value, out, int(heads or 0))
    if last is None or not heads:
        raise AttngradError(
            f"{type(model).__name__}: no self-attention layer with separate query/key/value maps was found; "
            "gradeclip and attention_eclip need one"
        )
    return last


class Tower(HFModelAdapter):
    """Base of both towers: a Hugging Face encoder (eager attention, eval mode) and a projection,
    on the modality-neutral model contract (:class:`attngrad.models.base.ModelAdapter`, through
    :class:`attngrad.models.hf.HFModelAdapter`, which gives the attention override).

    A tower's :meth:`forward` returns joint-space embeddings (B, E) as its ``logits``: a tower
    has no classes, so ``labels`` is empty; :class:`attngrad.clip.explainer.ClipExplainer`
    turns embeddings into cosines with the other tower's items.

    Attributes:
        model: the wrapped Hugging Face encoder (``encoder`` is the same object).
        projection: the linear map from the pooled state to the joint embedding space.
        read: ``"token"`` (one row per item: CLS, or a text's end-of-text token) or ``"pooled"``
            (every real token's row: mean pooling).
    """

    projection: nn.Module
    read: str = "token"

    def __init__(self, encoder: nn.Module, projection: nn.Module):
        # not HFModelAdapter.__init__: CLIP's towers are sub-modules (``CLIPVisionTransformer``),
        # not PreTrainedModels; they share their sub-config, which the override switches
        config = getattr(encoder, "config", None)
        if config is None:
            raise AttngradError(f"{type(encoder).__name__} is not a Hugging Face encoder (it has no config)")
        ensure_eager(encoder)
        self.model = encoder.eval()
        self.projection = projection
        self.labels = []
        self.special_tokens = {"cls": 0}

    @property
    def encoder(self) -> nn.Module:
        return self.model

    @contextmanager
    def frozen_weights(self) -> Iterator[None]:
        """The encoder's weights (the contract's default) and the projection's, restored afterwards."""
        flags = [(w, w.requires_grad) for w in self.projection.parameters()]
        with super().frozen_weights():
            try:
                for w, _ in flags:
                    w.requires_grad_(False)
                yield
            finally:
                for w, flag in flags:
                    w.requires_grad_(flag)

    def attention_parts(self) -> AttentionParts:
        return last_attention_parts(self.encoder)


class ImageTower(Tower, ImageAdapter):
    """An image encoder read at its CLS token over a patch grid (an :class:`~attngrad.models.base.ImageAdapter`).

    Args:
        encoder: e.g. ``CLIPVisionModel`` or ``ViTModel``.
        projection: pooled state -> joint embedding.
        pool: ``pool(outputs)`` -> pooled state (B, D); CLIP: ``pooler_output`` (post-LayerNorm
            CLS); ViT: ``last_hidden_state[:, 0]`` (the classifier's pre-logit feature).
        preprocessor: how images become ``pixel_values``.
        patch_size: ``(ph, pw)``.
    """

    def __init__(self, encoder: nn.Module, projection: nn.Module, pool: Callable, preprocessor: Preprocessor,
                 patch_size: tuple[int, int]):
        super().__init__(encoder, projection)
        self.pool = pool
        self.preprocessor = preprocessor
        self.patch_size = patch_size
        self.special_tokens = {"cls": 0}

    def forward(self, pixel_values: torch.Tensor) -> ForwardOutput:
        """Joint-space embeddings (B, E), not normalised, and every layer's maps (B, H, N, N)."""
        out = self.encoder(pixel_values=pixel_values, output_attentions=True)
        return ForwardOutput(self.projection(self.pool(out)), self.check_attentions(getattr(out, "attentions", None)))


@dataclass
class TextBatch(Encoded):
    """Tokenised, right-padded texts: :class:`attngrad.text.Encoded` (texts, ids, mask, content, tokens,
    word ids, offsets) plus the row each text is read at.

    Attributes:
        positions: (B,) the row read per text (the end-of-text token; 0 for pooled towers).
    """

    positions: torch.Tensor

    def repeat(self, times: int) -> TextBatch:
        """Every text ``times`` times in a row, as a batch of ``times * B`` (for B items explained K ways)."""
        idx = torch.arange(len(self.texts)).repeat_interleave(times)
        pick = idx.tolist()
        return TextBatch(**{f.name: _take(getattr(self, f.name), idx, pick) for f in fields(self)})


def _take(value: Any, idx: torch.Tensor, pick: list[int]) -> Any:
    """Rows ``pick`` of a batch field: a tensor indexed by ``idx``, a list item by item."""
    return value[idx.to(value.device)] if isinstance(value, torch.Tensor) else [value[i] for i in pick]



def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, refusing none at all or an empty one (a map of no words)."""
    if not texts:
        raise AttngradError("no texts given")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise AttngradError(f"text {i + 1} is empty; give at least one word")
    return list(texts)

class TextTower(Tower):
    """A text encoder and its tokenizer, read at one token per text or pooled over real tokens.

    Args:
        encoder: e.g. ``CLIPTextModel`` (causal, pooled at the end-of-text token) or ``BertModel``.
        projection: pooled state -> joint embedding.
        tokenizer: its tokenizer (a fast one gives word ids and character offsets for display).
        read: ``"token"``: the state at ``positions`` (after the encoder's final LayerNorm, as
            ``pooler_output``); ``"pooled"``: the mean of ``last_hidden_state`` over real tokens.
        eos_token_id: the end-of-text id whose first occurrence is read (``token`` reads);
            ``None`` or 2 means "the highest id in the text", as Hugging Face's CLIP does for old configs.
        max_length: most tokens per text (default: ``max_position_embeddings``).
    """

    def __init__(self, encoder: nn.Module, projection: nn.Module, tokenizer, *, read: str = "token",
                 eos_token_id: int | None = None, max_length: int | None = None):
        if read not in ("token", "pooled"):
            raise AttngradError(f"read must be 'token' or 'pooled', not {read!r}")
        super().__init__(encoder, projection)
        self.tokenizer = tokenizer
        self.read = read
        self.eos_token_id = eos_token_id
        limits = [getattr(encoder.config, "max_position_embeddings", None), max_length,
                  getattr(tokenizer, "model_max_length", None)]
        self.max_length = min((int(n) for n in limits if n and n < 100_000), default=77)
        self.special_tokens = _leading_special(tokenizer)

    def encode(self, texts: str | Sequence[str]) -> TextBatch:
        """Tokenise and right-pad; empty or over-long texts raise."""
        texts = check_texts([texts] if isinstance(texts, str) else list(texts))
        tok = self.tokenizer
        fast = getattr(tok, "is_fast", False)
        enc = tok(texts, padding=True, truncation=False, return_tensors="pt", return_special_tokens_mask=True,
                  return_offsets_mapping=fast)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.shape[1] > self.max_length:
            longest = int(mask.sum(dim=1).argmax())
            raise AttngradError(
                f"text {longest + 1} has {int(mask[longest].sum())} tokens, more than the text tower's limit of "
                f"{self.max_length}; shorten it"
            )
        lengths = mask.sum(dim=1).tolist()
        special = enc["special_tokens_mask"].bool()
        for i, n in enumerate(lengths):
            refuse_unknown_text(tok, f"text {i + 1}", texts[i], ids[i, :n][~special[i, :n]].tolist())
        tokens = [tok.convert_ids_to_tokens(ids[i, :n].tolist()) for i, n in enumerate(lengths)]
        if fast:
            word_ids = [enc.word_ids(i)[:n] for i, n in enumerate(lengths)]
            offsets = [[tuple(o) for o in enc["offset_mapping"][i, :n].tolist()] for i, n in enumerate(lengths)]
        else:
            word_ids = [[None if s else j for j, s in enumerate(special[i, :n].tolist())] for i, n in enumerate(lengths)]
            offsets = [[(0, 0)] * n for n in lengths]
        positions = self.positions(ids, mask)
        device = self.device
        return TextBatch(texts, ids.to(device), mask.to(device), (mask.bool() & ~special).to(device), tokens,
                         word_ids, offsets, positions=positions.to(device))

    def positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The row read per text: the first end-of-text token (Hugging Face ``CLIPTextModel``'s rule)."""
        if self.read == "pooled":
            return torch.zeros(input_ids.shape[0], dtype=torch.long)
        if self.eos_token_id in (None, 2):
            return input_ids.argmax(dim=-1)
        hits = input_ids == self.eos_token_id
        if not hits.any(dim=1).all():
            raise AttngradError(f"a text has no end-of-text token (id {self.eos_token_id}); encode it with the tower's tokenizer")
        return hits.int().argmax(dim=-1)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, N, D), detached: the float input the maps are traced from."""
        lookup: Any = self.encoder.get_input_embeddings()  # type: ignore[operator]
        return lookup(input_ids.to(self.device)).detach()

    @contextmanager
    def _embeddings_from(self, inputs_embeds: torch.Tensor) -> Iterator[None]:
        """The encoder's token-embedding lookup returns ``inputs_embeds`` instead (position
        embeddings, masks and pooling stay the model's own)."""
        lookup: Any = self.encoder.get_input_embeddings()  # type: ignore[operator]
        handle = lookup.register_forward_hook(lambda m, i, o: inputs_embeds)
        try:
            yield
        finally:
            handle.remove()

    def forward(self, inputs_embeds: torch.Tensor, batch: TextBatch) -> ForwardOutput:
        """Joint-space embeddings (B, E) and every layer's maps, from token embeddings of ``batch``."""
        with self._embeddings_from(inputs_embeds):
            out = self.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True)
        hidden = out.last_hidden_state
        if self.read == "pooled":
            weights = batch.attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        else:
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.positions]
        return ForwardOutput(self.projection(pooled), self.check_attentions(getattr(out, "attentions", None)))


def _leading_special(tokenizer) -> dict[str, int]:
    """``{"cls": 0}`` (BERT family) or ``{"start": 0}`` (CLIP's start-of-text) when the tokenizer puts a
    special token first, else ``{}``."""
    enc = tokenizer("a", return_special_tokens_mask=True)
    if not enc["special_tokens_mask"] or not enc["special_tokens_mask"][0]:
        return {}
    return {"cls": 0} if enc["input_ids"][0] == getattr(tokenizer, "cls_token_id", None) else {"start": 0}
