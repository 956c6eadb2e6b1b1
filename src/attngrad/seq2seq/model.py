"""Adapter over Hugging Face encoder-decoder language models (BART, T5, Marian, ...).

``AutoModelForSeq2SeqLM`` with eager attention returns, with ``output_attentions=True``,
every encoder self-attention map, decoder self-attention map and cross-attention map
(decoder queries, encoder keys) as tensors of the autograd graph (after softmax; dropout
is the identity in eval mode). This module turns texts into a padded batch with the
decoder position to explain, runs the model once, and hands back logits and maps.

Decoder inputs follow the models' teacher forcing: ``[decoder_start] + labels[:k]``,
where ``labels`` is the tokenised target (``tokenizer(text_target=...)``, end-of-sequence
included); the logit of ``labels[k]`` is read at decoder position ``k``. Batches are
padded on the right; the masks keep every text's map what it would be alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import AttngradError, unknown_positions
from ..models.base import ForwardOutput
from ..models.hf import HFModelAdapter, check_model_folder, first_line, load_config

#: Largest ``model_max_length`` taken at face value (tokenizers without a limit report ~1e30).
_NO_LIMIT = 100_000


@dataclass
class Side:
    """One side (source or decoder input) of a batch: per text, its tokens and where they come from.

    Attributes:
        texts: the texts (a decoder side without target text has ``""``).
        tokens: per text, its tokens (strings), in order.
        special: per text and token, true for special tokens (start, end, padding symbols).
        word_ids: per text and token, the index of its word in the text (``None`` for special tokens).
        offsets: per text and token, its character span ``(start, end)`` in the text.
    """

    texts: list[str]
    tokens: list[list[str]]
    special: list[list[bool]]
    word_ids: list[list[int | None]]
    offsets: list[list[tuple[int, int]]]


@dataclass
class Batch:
    """A padded batch of (source, decoder input) pairs and what to explain in each.

    Attributes:
        input_ids, attention_mask: (B, S) encoder inputs, right-padded; mask 1 on real tokens.
        decoder_input_ids, decoder_attention_mask: (B, T) decoder inputs, right-padded.
        positions: (B,) the decoder position whose next-token logit is explained.
        targets: (B,) the explained token ids; -1 where the model's greedy choice is taken.
        source, decoder: tokens, words and offsets of both sides.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    decoder_input_ids: torch.Tensor
    decoder_attention_mask: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    source: Side
    decoder: Side


class Seq2SeqOutput(ForwardOutput):
    """Logits (B, T, V) and per layer the attention maps (B, H, n_q, n_k), all in the graph.

    A :class:`~attngrad.models.base.ForwardOutput` whose ``logits`` keep the decoder positions
    (the next-token logits at every position; :class:`Batch` ``positions`` says which is explained)
    and whose ``attentions`` are every map in the order the model computes them: the encoder's
    self-attention layers, then per decoder layer its self-attention and its cross-attention
    (the order :meth:`Seq2SeqAdapter.override_attention` takes). ``encoder``, ``decoder`` and
    ``cross`` are the three kinds apart.
    """

    def __init__(self, logits: torch.Tensor, encoder: list[torch.Tensor], decoder: list[torch.Tensor],
                 cross: list[torch.Tensor]):
        calls = [m for pair in zip(decoder, cross) for m in pair]
        super().__init__(logits, list(encoder) + calls)
        self.encoder = list(encoder)
        self.decoder = list(decoder)
        self.cross = list(cross)


@contextmanager
def graph_to_maps(model: nn.Module) -> Iterator[None]:
    """Gradients enabled, and, when every weight is frozen, the weights made trainable for the
    forward pass only (a graph to the attention maps needs something that requires grad)."""
    weights = list(model.parameters())
    frozen = not any(w.requires_grad for w in weights)
    try:
        if frozen:
            for w in weights:
                w.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        if frozen:
            for w in weights:
                w.requires_grad_(False)


def _pad(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


class Seq2SeqAdapter(HFModelAdapter):
    """Wrap an encoder-decoder ``PreTrainedModel`` (``*ForConditionalGeneration``, ``MarianMTModel``) and its tokenizer.

    An adapter of the modality-neutral model contract (:class:`attngrad.models.base.ModelAdapter`,
    through :class:`attngrad.models.hf.HFModelAdapter`: eager attention, eval mode, attention
    override): :meth:`forward` takes a :class:`Batch` (from :meth:`encode`), ``labels`` are the
    vocabulary's tokens (the logits' columns), ``special_tokens`` is ``{"decoder_start": 0}`` (the
    token leading every decoder input), ``num_layers`` counts every map ``forward`` returns.
    Not in the adapter registry: it needs the tokenizer, which a bare model does not carry.

    Args:
        model: the model; switched to eager attention and eval mode.
        tokenizer: its tokenizer; a fast one gives words their spans in the text, a slow
            (sentencepiece) one, such as Marian's, gives words joined from ``▁`` pieces.
        max_length: most tokens read per text (default: the model's and tokenizer's limit).
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int | None = None):
        config = getattr(model, "config", None)
        if config is None or not getattr(config, "is_encoder_decoder", False):
            raise AttngradError(
                f"{type(model).__name__} is not an encoder-decoder model; use attngrad.text (encoders) "
                "or a *ForConditionalGeneration / MarianMTModel here"
            )
        super().__init__(model)
        self.tokenizer = tokenizer
        self.special_tokens = {"decoder_start": 0}
        self.start = config.decoder_start_token_id
        if self.start is None:
            self.start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
        if self.start is None:
            raise AttngradError(f"{type(model).__name__}: config has no decoder_start_token_id; set it")
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
        if self.pad is None:
            raise AttngradError("the tokenizer has no padding token; set tokenizer.pad_token")
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id
        limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None),
                  max_length]
        self.max_length = min((int(n) for n in limits if n and n < _NO_LIMIT), default=512)
        size = int(getattr(config, "vocab_size", 0) or len(tokenizer))
        known = min(size, len(tokenizer))
        named = tokenizer.convert_ids_to_tokens(list(range(known)))
        self.labels = [str(t) for t in named] + [f"<id {i}>" for i in range(known, size)]

    @property
    def num_layers(self) -> int:
        """Maps returned by :meth:`forward`: encoder layers + 2 x decoder layers (self and cross)."""
        config = self.model.config
        enc = next((getattr(config, k) for k in ("encoder_layers", "num_layers") if getattr(config, k, None)), None)
        dec = next((getattr(config, k) for k in ("decoder_layers", "num_decoder_layers") if getattr(config, k, None)),
                   enc)
        if enc is None or dec is None:
            raise AttngradError(f"{type(self.model).__name__}: the config gives no encoder/decoder layer counts")
        return int(enc) + 2 * int(dec)

    def grid(self, inputs) -> tuple[int, int]:
        """A map scores the source tokens: ``(1, S)`` for a :class:`Batch` (padding included)."""
        return 1, int(inputs.input_ids.shape[1])

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str | None = None) -> Seq2SeqAdapter:
        """Load a model folder, or a Hub name: from the local cache first, else downloaded (when online)."""
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = check_model_folder(name_or_path)
        where = str(folder if folder is not None else name_or_path)
        try:
            tokenizer, model = _load(where, local_files_only=True)
        except _LoadError:
            if folder is not None:
                raise
            tokenizer, model = _load(where, local_files_only=False)
        if device is not None:
            model = model.to(device)
        return cls(model, tokenizer)

    def _tokenize(self, texts: list[str], target: bool) -> tuple[list[list[int]], Side]:
        fast = getattr(self.tokenizer, "is_fast", False)
        kwargs = {"add_special_tokens": True, "truncation": False, "verbose": False,
                  "return_offsets_mapping": fast, "return_special_tokens_mask": True}
        try:
            enc = self.tokenizer(text_target=texts, **kwargs) if target else self.tokenizer(texts, **kwargs)
        except (TypeError, ValueError) as err:
            raise AttngradError(f"cannot tokenise the {'target' if target else 'source'} texts: {first_line(err)}") from None
        ids = [list(row) for row in enc["input_ids"]]
        for text, row in zip(texts, ids):
            if len(row) > self.max_length:  # never cut: a shortened source is another input
                raise AttngradError(
                    f"the {'target' if target else 'source'} text {text[:40] + '...' if len(text) > 40 else text!r} has {len(row)} tokens, more than "
                    f"the model's limit of {self.max_length}; shorten it"
                )
        tokens = [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
        special = [[bool(s) for s in row] for row in enc["special_tokens_mask"]]
        _refuse_unknown(self.tokenizer, texts, ids, enc["offset_mapping"] if fast else None, target)
        if fast:
            word_ids = [enc.word_ids(i) for i in range(len(texts))]
            offsets = [[tuple(o) for o in row] for row in enc["offset_mapping"]]
        else:  # slow (sentencepiece) tokenizers, Marian's: no offsets; "▁" starts a word
            word_ids = [_piece_words(row, keep) for row, keep in zip(tokens, special)]
            offsets = [[(0, 0)] * len(row) for row in tokens]
        return ids, Side(list(texts), tokens, special, word_ids, offsets)

    def encode(self, sources: Sequence[str], targets: Sequence[str | None], positions: Sequence[int | None]) -> Batch:
        """Tokenise and pad; ``positions[i]`` is an index into target ``i``'s tokens (teacher forcing)
        or ``None`` (the target, end-of-sequence removed, is a prefix; its greedy next token is explained).
        """
        src_ids, source = self._tokenize(list(sources), target=False)
        texts = [t or "" for t in targets]
        lab_ids, labels = self._tokenize(texts, target=True)
        rows, explained = [], []
        dec = Side(texts, [], [], [], [])
        start_token = self.tokenizer.convert_ids_to_tokens([self.start])[0]
        for i, (target, position) in enumerate(zip(targets, positions)):
            ids = lab_ids[i] if target is not None else []
            keep = len(ids)
            if position is None:
                if keep and ids[-1] == self.eos:
                    keep -= 1
                explained.append(-1)
            else:
                if not ids:
                    raise AttngradError("a position needs a target text: give target=... (or position=None)")
                if not -len(ids) <= position < len(ids):
                    raise AttngradError(
                        f"position {position} is out of range: the target {target!r} has {len(ids)} tokens "
                        f"({' '.join(labels.tokens[i])}); use 0..{len(ids) - 1}, negative from the end, or None"
                    )
                keep = position % len(ids)
                explained.append(ids[keep])
            rows.append([self.start] + ids[:keep])
            dec.tokens.append([start_token] + labels.tokens[i][:keep])
            dec.special.append([True] + labels.special[i][:keep])
            none: list[int | None] = [None]
            dec.word_ids.append(none + labels.word_ids[i][:keep])
            dec.offsets.append([(0, 0)] + labels.offsets[i][:keep])
        if len(max(rows, key=len)) > self.max_length:
            raise AttngradError(f"a target prefix is longer than the model's limit of {self.max_length} tokens")
        input_ids, attention_mask = _pad(src_ids, self.pad)
        decoder_input_ids, decoder_attention_mask = _pad(rows, self.pad)
        positions_t = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        return Batch(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, positions_t,
                     torch.tensor(explained, dtype=torch.long), source, dec)

    def forward(self, batch: Batch) -> Seq2SeqOutput:
        """One forward pass with every attention map kept; gradients reach the maps even if the weights are frozen."""
        device = self.device
        with graph_to_maps(self.model):
            out = self.model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                decoder_input_ids=batch.decoder_input_ids.to(device),
                decoder_attention_mask=batch.decoder_attention_mask.to(device),
                output_attentions=True,
                use_cache=False,
            )
        maps = [self.check_attentions(m) for m in (out.encoder_attentions, out.decoder_attentions, out.cross_attentions)]
        return Seq2SeqOutput(out.logits, *maps)


class _LoadError(AttngradError):
    """A model that could not be loaded (tried again online when it was not in the local cache)."""


def _load(where: str, *, local_files_only: bool):
    """Tokenizer and eager-attention model of ``where``; Hub retries are not logged."""
    import logging

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        config = load_config(where, hint="pass a local folder, or a Hub name when online", error=_LoadError,
                             local_files_only=local_files_only)
        if not getattr(config, "is_encoder_decoder", False):
            raise AttngradError(
                f"{where}: not an encoder-decoder model (model type {config.model_type!r}); pass BART, T5, "
                "Marian or another AutoModelForSeq2SeqLM model"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_files_only)
            model = AutoModelForSeq2SeqLM.from_pretrained(where, attn_implementation="eager",
                                                          local_files_only=local_files_only)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as err:
            raise _LoadError(f"cannot load model {where!r}: {first_line(err)}") from None
    finally:
        hub_logger.setLevel(level)
    return tokenizer, model


def _piece_words(tokens: list[str], special: list[bool]) -> list[int | None]:
    """Word ids of sentencepiece pieces: a piece starting with ``▁`` begins a word, others continue it."""
    out: list[int | None] = []
    word = -1
    for token, is_special in zip(tokens, special):
        if is_special:
            out.append(None)
            continue
        if token.startswith("\u2581") or word < 0:
            word += 1
        out.append(word)
    return out


def _refuse_unknown(tokenizer: object, texts: Sequence[str], ids: Sequence[Sequence[int]], offsets, target: bool) -> None:
    """Refuse a text with words the tokenizer does not know: they become its unknown token, and a map over
    ``<unk>`` would not show them (:func:`attngrad.errors.unknown_positions`)."""
    for i, (text, row) in enumerate(zip(texts, ids)):
        where = unknown_positions(tokenizer, text, row)
        if where:
            words = [text[offsets[i][j][0]:offsets[i][j][1]] for j in where] if offsets is not None else []
            shown = ", ".join(repr(w) for w in dict.fromkeys(words) if w) or f"{len(where)} token(s)"
            raise AttngradError(f"the {'target' if target else 'source'} text {text[:40]!r} has words this model does not "
                                f"know ({shown}): they tokenise to {getattr(tokenizer, 'unk_token', None)!r}; use words "
                                "of its vocabulary")
