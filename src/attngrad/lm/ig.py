"""Integrated gradients at any layer of a causal language model (see :mod:`attngrad.methods.ig`).

The language-model pipeline has its own passes (:mod:`attngrad.lm.attribution`), so the family
reaches it here: :func:`lm_integrated_gradients` explains the next-token prediction of a batch of
prompts with the path in the space of ``layer`` (``input``: the token embeddings; ``hidden:K``;
``attention:K``) from ``baseline`` (``zero``, ``mean``, ``pad`` — the pad token's embedding at every
position —, ``uniform`` for attention rows, or a tensor). All (prompt, node) pairs go through the
model ``batch_size`` rows at a time, each row with its own prompt's mask and positions.

Scores are per token (B, N) over the left-padded batch (padding 0), signed; their sum over a
prompt is the attribution total, compared with ``f(x) - f(x')`` by :meth:`PathResult.error`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch

from ..errors import AttngradError
from ..losses import LossLike, get_loss
from ..methods._paths import PathResult
from ..methods.ig import BaselineLike, layer_path, make_baseline, token_attributions
from .model import Batch, LMAdapter


def rows_of(batch: Batch, items: torch.Tensor) -> Batch:
    """The batch's rows ``items`` (prompts may repeat: one row per path point)."""
    index = items.tolist()
    return Batch([batch.prompts[i] for i in index], batch.input_ids[items], batch.attention_mask[items],
                 batch.position_ids[items], [batch.lengths[i] for i in index])


@dataclass
class LMPath:
    """Integrated gradients of a batch of prompts: per-token scores (B, N), the path result, the targets (B,)."""

    scores: torch.Tensor
    result: PathResult
    targets: torch.Tensor
    kind: str


@dataclass(frozen=True)
class IGOptions:
    """The options of ``ig`` on a language model, their types and defaults (the one list of them):
    ``LMExplainer.explain_methods(..., options={"ig": {...}})``, ``explain-lm --method-option ig.OPTION=VALUE``,
    the keyword arguments of :func:`lm_integrated_gradients` and :func:`batch_path`."""

    layer: str = "input"
    baseline: BaselineLike = "zero"
    steps: int = 16
    rule: str = "gauss_legendre"
    batch_size: int = 32
    keep_first: bool | None = False

    def check(self) -> None:
        """Refuse options that are out of range (one-line :class:`AttngradError`)."""
        from ..methods._common import check_positive
        from ..methods._paths import RULES
        from ..methods.ig import check_baseline, check_layer_spec

        check_layer_spec("ig", self.layer)
        check_baseline("ig", self.baseline)
        check_positive("ig", steps=self.steps, batch_size=self.batch_size)
        if self.rule not in RULES:
            raise AttngradError(f"ig: unknown rule {self.rule!r}; choose from {', '.join(RULES)}")
        if self.keep_first not in (None, True, False):
            raise AttngradError(f"ig: keep_first is true or false, not {self.keep_first!r}")
        if self.keep_first and self.layer.strip() != "input":
            raise AttngradError("ig: keep_first keeps the first token's embedding: use it with layer 'input'")
        if isinstance(self.baseline, str) and self.baseline in ("blur",):
            raise AttngradError("ig: baseline 'blur' is for pixels; a language model takes zero, mean, pad, mask, "
                                "uniform (attention) or a tensor")


#: The names of :class:`IGOptions`.
IG_OPTIONS = tuple(f.name for f in fields(IGOptions))


def check_options(**options: Any) -> None:
    """Refuse options of :func:`lm_integrated_gradients` (:class:`IGOptions`) that are out of range."""
    IGOptions(**options).check()


def lm_integrated_gradients(
    explainer: Any,
    prompts: str | Sequence[str],
    *,
    layer: str = "input",
    baseline: BaselineLike = "zero",
    steps: int = 16,
    rule: str = "gauss_legendre",
    batch_size: int = 32,
    targets: torch.Tensor | None = None,
    loss: LossLike = "logit",
    contrasts: torch.Tensor | None = None,
    keep_first: bool | None = False,
) -> LMPath:
    """Integrated gradients of the next token's loss (default: the predicted token's logit) for ``prompts``.

    Args:
        explainer: an :class:`~attngrad.lm.LMExplainer` (its ``encode`` and ``adapter`` are used).
        targets: token ids (B,) explained (default: each prompt's top next token).
        loss: the loss of the logits, targets and ``contrasts`` (see :mod:`attngrad.losses`).
        keep_first: (layer ``input``) the baseline keeps each prompt's first token as it is: the path then
            never moves the attention sink, whose replacement makes the path far from smooth
            (docs/results/attribution-error.md: SmolLM2's error falls to 3e-6 at 256 nodes with it, stays
            above 100 % without it). ``None``: kept at layer ``input``, not at the other layers.
    """
    options = IGOptions(layer, baseline, steps, rule, batch_size, keep_first)
    return batch_path(explainer.adapter, explainer.encode(prompts), targets=targets, loss=loss, contrasts=contrasts,
                      **vars(options))


def batch_path(
    adapter: LMAdapter,
    batch: Batch,
    *,
    targets: torch.Tensor | None = None,
    loss: LossLike = "logit",
    contrasts: torch.Tensor | None = None,
    **options: Any,
) -> LMPath:
    """:func:`lm_integrated_gradients` of an encoded (left-padded) batch; ``options``: those of :class:`IGOptions`."""
    o = IGOptions(**options)
    if o.keep_first is None:
        o = replace(o, keep_first=isinstance(o.layer, str) and o.layer.strip() == "input")
    o.check()
    baseline = o.baseline
    loss_fn = get_loss(loss)
    embeds = adapter.embed(batch.input_ids)
    if targets is None:
        with torch.no_grad():
            targets = adapter.forward(embeds, batch, attentions=False).logits.argmax(dim=-1)
    chosen = targets.to(adapter.device)
    if o.keep_first:
        base = make_baseline("input", embeds, baseline, adapter=adapter, name="ig", mask=batch.attention_mask).clone()
        rows = torch.arange(embeds.shape[0], device=embeds.device)
        first = torch.tensor([embeds.shape[1] - n for n in batch.lengths], device=embeds.device)
        base[rows, first] = embeds[rows, first]
        baseline = base

    def forward(items: torch.Tensor, inputs: torch.Tensor) -> Any:
        return adapter.forward(inputs, rows_of(batch, items))

    def score(items: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        c = None if contrasts is None else contrasts.to(logits.device)[items]
        return loss_fn(logits, chosen[items], c)

    kind, result = layer_path(adapter, embeds, forward, score, layer=o.layer, baseline=baseline, steps=o.steps, rule=o.rule,
                              batch_size=o.batch_size, mask=batch.attention_mask)
    scores = token_attributions(kind, result.attributions) * batch.attention_mask.to(result.attributions.dtype)
    return LMPath(scores.detach(), result, chosen, kind)
