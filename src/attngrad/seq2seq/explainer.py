"""Explain an encoder-decoder model's next token over the source tokens and the earlier decoder tokens.

``Seq2SeqExplainer`` runs one forward and one backward pass per batch (the gradient of the
explained token's logit with respect to every attention map), then for each method builds
``Abar = E_H(w ⊙ A)`` per layer and applies the relevance rules of Chefer et al. (ICCV
2021) for encoder self-attention, decoder self-attention and cross-attention
(:mod:`attngrad.seq2seq.rules`). The explanation of the token at decoder position ``p`` is
row ``p`` of ``R^{ts}`` (over source tokens) and of ``R^{tt} - I`` (over decoder input tokens,
``p`` and earlier). With ``complete`` (default) both are signed: red supports the token's
logit, blue opposes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AttngradError
from ..losses import LossLike, check_contrast, get_loss
from ..results import Result, Spot, maps_alias
from ..text.display import Word, merge_words
from .model import Batch, Seq2SeqAdapter, Side
from .rules import SIGNED, encoder_decoder, head_mix, weighting

Position = int | str | None


@dataclass
class Seq2SeqExplanation(Result):
    """Maps of a batch of explained decoder tokens for one method.

    Attributes:
        source_scores: (B, S) raw scores over the source tokens (``R^{ts}`` at the explained row);
            0 at padding.
        target_scores: (B, T) raw scores over the decoder input tokens (``R^{tt} - I`` at the
            explained row); 0 after the explained position and at padding.
        batch: tokens, words and offsets of both sides, positions, padded ids.
        tokens: (B,) the explained token ids; ``token_names`` their strings.
        values: (B,) the explained loss values (the logits, for ``loss="logit"``).
        method, loss: names; ``signed`` says whether the sign means support/oppose.

    As a :class:`~attngrad.results.Result`: ``maps`` is ``source_scores`` (what the explained token
    rests on in the source); an item is a pair, its positions its source tokens (special tokens included,
    padding not). ``side="target"`` in :meth:`scores`, :meth:`position_names` and :meth:`top` reads the
    decoder inputs instead (:meth:`top` lists none after the explained position).
    """

    source_scores: torch.Tensor
    target_scores: torch.Tensor
    batch: Batch
    tokens: torch.Tensor
    token_names: list[str]
    values: torch.Tensor
    method: str
    loss: str
    signed: bool

    maps = maps_alias("source_scores")

    def _side(self, side: str) -> tuple[Side, torch.Tensor]:
        if side not in ("source", "target"):
            raise AttngradError(f"side must be 'source' or 'target', not {side!r}")
        return (self.batch.source, self.source_scores) if side == "source" else (self.batch.decoder, self.target_scores)

    def scores(self, index: int, *, side: str = "source") -> torch.Tensor:
        """Pair ``index``'s raw scores over its source (or ``side="target"``: decoder input) tokens (1-D)."""
        tokens, scores = self._side(side)
        return scores[index, : len(tokens.tokens[index])]

    def position_names(self, index: int, *, side: str = "source") -> list[str]:
        return list(self._side(side)[0].tokens[index])

    def top(self, index: int, k: int = 5, *, side: str = "source") -> list[Spot]:
        """Pair ``index``'s ``k`` highest-scored source (or ``side="target"``: decoder input) tokens, best first."""
        scores = self.scores(index, side=side)
        keep = None if side == "source" else torch.arange(scores.numel()) <= int(self.batch.positions[index])
        return self._spots(scores, self.position_names(index, side=side), keep, k)

    @property
    def sources(self) -> list[str]:
        return self.batch.source.texts

    @property
    def targets(self) -> list[str]:
        return self.batch.decoder.texts

    @property
    def positions(self) -> list[int]:
        return self.batch.positions.tolist()

    def source_tokens(self, index: int) -> list[tuple[str, float]]:
        """``(token, raw score)`` for every source token of pair ``index`` (special tokens included)."""
        tokens = self.batch.source.tokens[index]
        return list(zip(tokens, self.source_scores[index, : len(tokens)].tolist()))

    def target_tokens(self, index: int) -> list[tuple[str, float]]:
        """``(token, raw score)`` for the decoder inputs of pair ``index`` (start token first)."""
        tokens = self.batch.decoder.tokens[index]
        return list(zip(tokens, self.target_scores[index, : len(tokens)].tolist()))

    def _words(self, side: Side, scores: torch.Tensor, index: int) -> list[Word]:
        n = len(side.tokens[index])
        keep = [not s for s in side.special[index]]
        pieces = [t.removeprefix("\u2581") for t in side.tokens[index]]  # sentencepiece word marks (slow tokenizers)
        return merge_words(side.texts[index], pieces, scores[index, :n].tolist(), side.word_ids[index],
                           side.offsets[index], keep)

    def source_words(self, index: int) -> list[Word]:
        """The source text of pair ``index`` as words (word pieces summed; special tokens dropped)."""
        return self._words(self.batch.source, self.source_scores, index)

    def target_words(self, index: int) -> list[Word]:
        """The target prefix of pair ``index`` as words (up to the explained token; special tokens dropped)."""
        return self._words(self.batch.decoder, self.target_scores, index)


class EmptyExplanationWarning(UserWarning):
    """An explanation came out exactly zero everywhere (the rule leaves nothing to attribute)."""


def _as_list(value, n: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise AttngradError(f"{len(value)} {name} values for {n} source texts; give one, or one per source")
        return list(value)
    return [value] * n


class Seq2SeqExplainer:
    """Explain a Hugging Face encoder-decoder model (BART, T5, Marian) from attention maps and their gradients.

    No encoder-decoder weights ship with attngrad: pass a local folder, or a Hub name (e.g.
    ``facebook/bart-base``, ``t5-small``, ``Helsinki-NLP/opus-mt-en-de``) on a machine that can
    download it or has it cached.

    Args:
        model: a :class:`Seq2SeqAdapter`, or an ``AutoModelForSeq2SeqLM`` model.
        tokenizer: its fast tokenizer; needed unless ``model`` is an adapter.
        device: where to run; default where the model is.
        normalize: the normalisation of Chefer et al.'s eqs. 8-9 in cross-attention layers.

    Example::

        ex = Seq2SeqExplainer.from_pretrained("Helsinki-NLP/opus-mt-en-de")
        res = ex.explain("The cat sat on the mat.", target="Die Katze saß auf der Matte.", position=1)
        res.source_words(0), res.target_words(0)   # signed word scores for the target's token 1
        ex.explain("The cat sat on the mat.")        # the greedy first token of the translation
    """

    def __init__(self, model: nn.Module | Seq2SeqAdapter, tokenizer=None, *, device: torch.device | str | None = None,
                 normalize: bool = True):
        if isinstance(model, Seq2SeqAdapter):
            self.adapter = model
        else:
            if tokenizer is None:
                raise AttngradError("give the model's tokenizer: Seq2SeqExplainer(model, tokenizer)")
            self.adapter = Seq2SeqAdapter(model, tokenizer)
        if device is not None:
            self.adapter.model.to(device)
        self.normalize = normalize

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *,
                        device: torch.device | str | None = None) -> Seq2SeqExplainer:
        """Load an ``AutoModelForSeq2SeqLM`` folder or Hub name; ``None``: the shipped synthetic-task model
        (:data:`attngrad.seq2seq.synthetic.MODEL`, a made-up language, not a real translation model)."""
        from .synthetic import MODEL

        return cls(Seq2SeqAdapter.from_pretrained(MODEL if name_or_path is None else name_or_path, device))

    def _expand(self, sources, targets, position) -> tuple[list[str], list[str | None], list[int | None]]:
        single = isinstance(sources, str)
        sources = [sources] if single else list(sources)
        if not sources or not all(isinstance(s, str) for s in sources):
            raise AttngradError("give one source text or a list of source texts")
        targets = _as_list(targets, len(sources), "target")
        positions = _as_list(position, len(sources), "position")
        out_s: list[str] = []
        out_t: list[str | None] = []
        out_p: list[int | None] = []
        for i, (s, t, p) in enumerate(zip(sources, targets, positions)):
            if not s.strip():
                raise AttngradError(f"source {i + 1} is empty; give the text to translate or summarise")
            if t is not None and not isinstance(t, str):
                raise AttngradError(f"target must be a text or None, not {type(t).__name__}")
            if t is not None and not t.strip():
                raise AttngradError(f"target {i + 1} is empty; give its text, or None to explain the first token")
            if p == "all":
                if t is None:
                    raise AttngradError("position='all' needs a target text")
                n = len(self.adapter._tokenize([t], target=True)[0][0])
                out_s += [s] * n
                out_t += [t] * n
                out_p += list(range(n))
            elif p is None or (isinstance(p, int) and not isinstance(p, bool)):
                out_s.append(s)
                out_t.append(t)
                out_p.append(p)
            else:
                raise AttngradError(f"position must be a token index, 'all' or None, not {p!r}")
        return out_s, out_t, out_p

    def _token_ids(self, values, n: int) -> torch.Tensor:
        ids = []
        for v in _as_list(values, n, "contrast"):
            if isinstance(v, int) and not isinstance(v, bool):
                model: Any = self.adapter.model  # a transformers model (nn.Module hides its methods from mypy)
                size = model.get_output_embeddings().weight.shape[0]
                if not 0 <= v < size:
                    raise AttngradError(f"contrast token id {v} is out of range; this model has ids 0..{size - 1}")
                ids.append(v)
            else:
                found = self.adapter.tokenizer.convert_tokens_to_ids(v)
                if found is None or found == self.adapter.tokenizer.unk_token_id:
                    raise AttngradError(f"{v!r} is not a token of this tokenizer; give a token string or id")
                ids.append(found)
        return torch.tensor(ids, dtype=torch.long)

    def explain_methods(
        self,
        sources: str | Sequence[str],
        targets: str | None | Sequence[str | None] = None,
        methods: Sequence[str] = ("complete",),
        *,
        position: Position | Sequence[Position] = None,
        loss: LossLike = "logit",
        contrast: str | int | Sequence[str | int] | None = None,
    ) -> dict[str, Seq2SeqExplanation]:
        """Every method's explanation of the same tokens, from one forward and one backward pass.

        Args:
            sources: source text(s).
            targets: per source, a target text or ``None`` (one for all, or one per source).
            methods: names from :data:`attngrad.seq2seq.rules.WEIGHTINGS`.
            position: per source: an index into the target's tokens (teacher forcing: explain
                the logit of that target token, read at the decoder position before it),
                ``"all"`` (every target token, one row each), or ``None`` (default: the target,
                end-of-sequence removed, is a decoder prefix, and the model's greedy next
                token is explained).
            loss: a loss of :mod:`attngrad.losses` over the logits at the explained position.
            contrast: the second token (string or id) for two-token losses (``diff``, ...).
        """
        weights = {m: weighting(m) for m in methods}
        if not weights:
            raise AttngradError("give at least one method")
        loss_fn = get_loss(loss)
        sources, targets, positions = self._expand(sources, targets, position)
        if loss_fn.needs_contrast and contrast is None:
            raise AttngradError(f"loss {loss_fn.name!r} compares two tokens; give contrast=... (a token or id)")
        check_contrast(loss_fn, contrast, what="token")
        contrasts = None if contrast is None else self._token_ids(contrast, len(sources))
        adapter = self.adapter
        batch = adapter.encode(sources, targets, positions)
        device = adapter.device
        out = adapter.forward(batch)
        rows = torch.arange(len(sources), device=device)
        pos = batch.positions.to(device)
        logits = out.logits[rows, pos]
        tokens = batch.targets.to(device)
        tokens = torch.where(tokens < 0, logits.detach().argmax(dim=-1), tokens)
        if contrasts is not None and bool((contrasts.to(device) == tokens).any()):
            i = int((contrasts.to(device) == tokens).nonzero()[0, 0])
            word = adapter.tokenizer.convert_ids_to_tokens([int(tokens[i])])[0]
            raise AttngradError(f"the contrast equals the explained token ({word!r}) for row {i + 1}; "
                                "a loss against itself is 0 and its map empty: pick another token")
        values = loss_fn(logits, tokens, None if contrasts is None else contrasts.to(device))
        maps = out.encoder + out.decoder + out.cross
        needs_grad = any(m != "rollout" for m in weights)
        grads = list(torch.autograd.grad(values.sum(), maps)) if needs_grad else [None] * len(maps)
        n_enc, n_dec = len(out.encoder), len(out.decoder)
        src_mask = batch.attention_mask.to(device).bool()
        dec_mask = batch.decoder_attention_mask.to(device).bool()
        steps = torch.arange(dec_mask.shape[1], device=device)
        query_mask = dec_mask & (steps[None, :] <= pos[:, None])  # later positions cannot change the logit at p
        results = {}
        for name, weight in weights.items():
            with torch.no_grad():
                enc = [head_mix(a.detach(), _d(g), weight, src_mask, src_mask)
                       for a, g in zip(out.encoder, grads[:n_enc])]
                dec = [(head_mix(a.detach(), _d(g), weight, query_mask, dec_mask),
                        head_mix(c.detach(), _d(gc), weight, query_mask, src_mask))
                       for a, g, c, gc in zip(out.decoder, grads[n_enc:n_enc + n_dec], out.cross,
                                              grads[n_enc + n_dec:])]
                relevance = encoder_decoder(enc, dec, normalize=self.normalize)
                source_scores = relevance["t", "s"][rows, pos] * src_mask
                self_rows = relevance["t", "t"][rows, pos]
                self_rows[rows, pos] -= 1.0  # R^{tt} - I: what attention added to the token's own input
                target_scores = self_rows * (steps[None, :] <= pos[:, None]) * dec_mask
            if not (bool(torch.isfinite(source_scores).all()) and bool(torch.isfinite(target_scores).all())):
                raise AttngradError(f"method {name!r} gave scores that are not finite; check the model and the inputs")
            empty = [i for i in range(len(sources)) if not bool(source_scores[i].any())]
            if empty:
                warnings.warn(f"{name}: the source map of row {empty[0] + 1} is exactly zero (decoder position "
                              f"{int(pos[empty[0]])}: under this rule no relevance reaches the source there); "
                              "try a later position or another method", EmptyExplanationWarning, stacklevel=3)
            results[name] = Seq2SeqExplanation(
                source_scores.cpu(), target_scores.cpu(), batch, tokens.cpu(),
                adapter.tokenizer.convert_ids_to_tokens(tokens.tolist()), values.detach().cpu(), name,
                loss_fn.name, SIGNED[name],
            )
        return results

    def explain(
        self,
        source: str | Sequence[str],
        target: str | None | Sequence[str | None] = None,
        *,
        method: str = "complete",
        position: Position | Sequence[Position] = None,
        loss: LossLike = "logit",
        contrast: str | int | Sequence[str | int] | None = None,
    ) -> Seq2SeqExplanation:
        """One method's explanation; see :meth:`explain_methods` for the arguments."""
        return self.explain_methods(source, target, [method], position=position, loss=loss, contrast=contrast)[method]


def _d(grad: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None else grad.detach()
