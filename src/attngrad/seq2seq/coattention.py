"""Co-attention (bi-modal) models: Hugging Face LXMERT, explained with the same relevance rules.

LXMERT (Tan & Bansal, 2019) runs language self-attention layers, vision (object-region)
self-attention layers, then cross-modality layers: in each, language queries read the
regions and region queries read the language (in parallel, one shared module), then each
side's self-attention. Chefer et al. (ICCV 2021) explain its answer from the text side's
CLS row of ``R^{tt}`` (over tokens) and ``R^{ti}`` (over regions): their
``lxmert/lxmert/src/ExplanationGenerator.py``, ``GeneratorOurs.generate_ours`` (the order
followed here) with the rules of :mod:`attngrad.seq2seq.rules`.

Hugging Face's ``LxmertModel`` returns only some of these maps (not the region-to-language
cross-attention, nor the cross-modality layers' self-attention), so every ``LxmertAttention``
module is wrapped while the model runs and its probabilities (after softmax, in the graph)
are recorded in call order. Differences from the authors' code, both of no effect on the
numbers: their last cross-modality layer skips the region side's cross-attention (it never
reaches the answer; here every map the answer does not depend on gets ``Abar = 0``), and they zero ``R^{tt}[cls, cls]``
where attngrad reports ``R^{tt} - I`` (what attention added beyond the identity), as for
encoder-decoders.

Only tested on tiny random configs: no LXMERT weights (nor the Faster R-CNN region features
it reads) are on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import AttngradError
from ..losses import LossLike, get_loss
from ..models.base import ForwardOutput, ModelAdapter
from ..results import Result, maps_alias
from .model import graph_to_maps
from .rules import SIGNED, Relevance, head_mix, weighting


@dataclass
class CoAttentionExplanation(Result):
    """Maps of a batch of LXMERT answers for one method.

    Attributes:
        text_scores: (B, n_t) the CLS row of ``R^{tt} - I`` over text tokens (0 at padding).
        region_scores: (B, n_i) the CLS row of ``R^{ti}`` over the regions (0 at padding).
        targets: (B,) explained answer indices; values: (B,) the loss values (logits by default).
        method, loss: names; ``signed``: whether the sign means support/oppose.
        text_mask, region_mask: (B, n_t), (B, n_i) true on real tokens / regions (``None``: all real).

    As a :class:`~attngrad.results.Result`: ``maps`` is ``region_scores`` (the image side, as for the
    other image-and-text families); an item is a question, its positions the regions ``"region j"``
    (:meth:`top` never lists a padded one). The text row has no token strings here: read ``text_scores``.
    """

    text_scores: torch.Tensor
    region_scores: torch.Tensor
    targets: torch.Tensor
    values: torch.Tensor
    method: str
    loss: str
    signed: bool
    text_mask: torch.Tensor | None = None
    region_mask: torch.Tensor | None = None

    maps = maps_alias("region_scores")

    def position_names(self, index: int) -> list[str]:
        return [f"region {j}" for j in range(self.region_scores.shape[1])]

    def _ranked(self, index: int) -> torch.Tensor | None:
        return None if self.region_mask is None else self.region_mask[index].bool()


def _schedule(model: nn.Module) -> list[tuple[nn.Module, list[tuple[str, str]]]]:
    """Each ``LxmertAttention`` module with the (query source, key source) of its calls, in call order."""
    encoder: Any = getattr(model, "lxmert").encoder  # noqa: B009
    plan = [(layer.attention.self, [("t", "t")]) for layer in encoder.layer]
    plan += [(layer.attention.self, [("i", "i")]) for layer in encoder.r_layers]
    for layer in encoder.x_layers:  # one shared module: language -> regions, then regions -> language
        plan.append((layer.visual_attention.att, [("t", "i"), ("i", "t")]))
        plan.append((layer.lang_self_att.self, [("t", "t")]))
        plan.append((layer.visn_self_att.self, [("i", "i")]))
    return plan


@contextmanager
def _recording(model: nn.Module) -> Iterator[list[tuple[str, str, torch.Tensor]]]:
    """Inside, every attention module's probabilities are appended as ``(query source, key source, probs)``."""
    records: list[tuple[str, str, torch.Tensor]] = []
    originals = []
    for module, calls in _schedule(model):
        original = module.forward
        originals.append((module, original))
        counter = iter(range(10**9))

        def forward(hidden, context, mask=None, output_attentions=False, *, _orig=original, _calls=calls,
                    _count=counter):
            out = _orig(hidden, context, mask, output_attentions=True)
            x, y = _calls[next(_count) % len(_calls)]
            records.append((x, y, out[1]))
            return out if output_attentions else out[:1]

        module.forward = forward
    try:
        yield records
    finally:
        for module, _ in originals:
            del module.forward  # the class's forward again


class CoAttentionOutput(ForwardOutput):
    """Answer logits (B, A) and every attention map in call order, with its (query, key) sources
    (``"t"`` text, ``"i"`` regions) in ``sources``."""

    def __init__(self, logits: torch.Tensor, attentions: list[torch.Tensor], sources: list[tuple[str, str]]):
        super().__init__(logits, attentions)
        self.sources = sources


class LxmertAdapter(ModelAdapter):
    """A Hugging Face ``LxmertForQuestionAnswering`` on the modality-neutral model contract.

    :meth:`forward` takes token ids and region features (as the model does) and returns the
    answer logits with every attention map of the three encoders, recorded in call order
    (:func:`_recording`). ``special_tokens`` is the text side's ``{"cls": 0}`` (the row the
    answer is explained from); ``labels`` name the answers by index (the config has no names);
    ``num_layers`` counts the maps. Attention override is not supported: ``LxmertAttention``
    computes its softmax inline, not through ``transformers``' attention interface.
    """

    def __init__(self, model: nn.Module):
        if not hasattr(model, "lxmert") or not hasattr(model, "answer_head"):
            raise AttngradError(f"{type(model).__name__} is not an LxmertForQuestionAnswering model")
        self.model = model.eval()
        config: Any = getattr(model, "config", None)
        self.labels = [f"answer {i}" for i in range(int(getattr(config, "num_qa_labels", 0) or 0))]
        self.special_tokens = {"cls": 0}

    @property
    def num_layers(self) -> int:
        return sum(len(calls) for _, calls in _schedule(self.model))

    def forward(self, input_ids: torch.Tensor, visual_feats: torch.Tensor,
                visual_pos: torch.Tensor, *, attention_mask: torch.Tensor,
                visual_attention_mask: torch.Tensor) -> CoAttentionOutput:
        """Answer logits and every map (after softmax, in the graph even when the weights are frozen)."""
        device = self.device
        with _recording(self.model) as records, graph_to_maps(self.model):
            out = self.model(input_ids=input_ids.to(device), visual_feats=visual_feats.to(device),
                             visual_pos=visual_pos.to(device), attention_mask=attention_mask.to(device),
                             visual_attention_mask=visual_attention_mask.to(device))
        probs = self.check_attentions([r[2] for r in records])
        return CoAttentionOutput(out.question_answering_score, probs, [(x, y) for x, y, _ in records])

    def override_attention(self, maps):
        raise AttngradError(
            "attention override is not supported for LXMERT: its attention layers compute the softmax inline, "
            "so stored maps cannot be put in their place"
        )


class CoAttentionExplainer:
    """Explain a Hugging Face ``LxmertForQuestionAnswering`` answer over text tokens and image regions.

    Args:
        model: the model (eval mode is set); its inputs are token ids and region features
            with their boxes, as ``LxmertForQuestionAnswering.forward`` takes them.
        normalize: the normalisation of Chefer et al.'s eqs. 8-9.
    """

    def __init__(self, model: nn.Module, *, normalize: bool = True):
        self.adapter = LxmertAdapter(model)
        self.model = self.adapter.model
        self.normalize = normalize

    def explain_methods(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        methods: list[str] | tuple[str, ...] = ("complete",),
        *,
        attention_mask: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        target: torch.Tensor | int | None = None,
        loss: LossLike = "logit",
        contrast: torch.Tensor | int | None = None,
    ) -> dict[str, CoAttentionExplanation]:
        """Every method's maps from one forward and one backward pass.

        Args:
            input_ids: (B, n_t) token ids; ``attention_mask`` (B, n_t) 1 on real tokens.
            visual_feats, visual_pos: (B, n_i, feat_dim), (B, n_i, 4); ``visual_attention_mask`` (B, n_i).
            target: answer index (or (B,) indices); ``None``: the top answer.
            loss, contrast: a loss of :mod:`attngrad.losses` over the answer logits, and the
                second answer for two-answer losses.
        """
        weights = {m: weighting(m) for m in methods}
        loss_fn = get_loss(loss)
        device = self.adapter.device
        batch, n_t = input_ids.shape
        n_i = visual_feats.shape[1]
        text_mask = (torch.ones(batch, n_t) if attention_mask is None else attention_mask).to(device).bool()
        region_mask = (torch.ones(batch, n_i) if visual_attention_mask is None else visual_attention_mask).to(device).bool()
        out = self.adapter.forward(input_ids, visual_feats, visual_pos, attention_mask=text_mask.long(),
                                   visual_attention_mask=region_mask.to(visual_feats.dtype))
        logits = out.logits
        targets = logits.detach().argmax(-1) if target is None else torch.as_tensor(target, device=device).expand(batch)
        contrasts = None if contrast is None else torch.as_tensor(contrast, device=device).expand(batch)
        if loss_fn.needs_contrast and contrasts is None:
            raise AttngradError(f"loss {loss_fn.name!r} compares two answers; give contrast=...")
        values = loss_fn(logits, targets, contrasts)
        probs = out.attentions
        records = [(x, y, a) for (x, y), a in zip(out.sources, probs)]
        # allow_unused: the last layer's region -> language map never reaches the answer (the
        # authors' code skips it); such a map gets a zero Abar, for ``rollout`` as well
        grads = torch.autograd.grad(values.sum(), probs, allow_unused=True)
        masks = {"t": text_mask, "i": region_mask}
        results = {}
        for name, weight in weights.items():
            with torch.no_grad():
                relevance = Relevance({"t": n_t, "i": n_i}, batch, probs[0], self.normalize)
                pending: list[tuple[str, str, torch.Tensor]] = []
                for (x, y, attn), grad in zip(records, grads):
                    if grad is None:
                        mix = torch.zeros_like(attn[:, 0])
                    else:
                        mix = head_mix(attn.detach(), grad.detach(), weight, masks[x], masks[y])
                    if x != y:
                        pending.append((x, y, mix))  # the two directions of a co-attention layer go together
                        if len(pending) == 2:
                            relevance.cross_attention(*pending)
                            pending = []
                    else:
                        relevance.self_attention(x, mix)
                text = relevance["t", "t"][:, 0].clone()
                text[:, 0] -= 1.0
                results[name] = CoAttentionExplanation(
                    (text * text_mask).cpu(), (relevance["t", "i"][:, 0] * region_mask).cpu(), targets.cpu(),
                    values.detach().cpu(), name, loss_fn.name, SIGNED[name], text_mask.cpu(), region_mask.cpu(),
                )
        return results

    def explain(self, input_ids, visual_feats, visual_pos, *, method: str = "complete", **kwargs) -> CoAttentionExplanation:
        """One method's maps; see :meth:`explain_methods`."""
        return self.explain_methods(input_ids, visual_feats, visual_pos, [method], **kwargs)[method]
