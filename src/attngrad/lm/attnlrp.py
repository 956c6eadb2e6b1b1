"""AttnLRP and T-Attr on an unpatched causal language model (Llama / Qwen2 / Mistral, GPT-2).

``attnlrp`` (Achtibat et al., ICML 2024) is one modified backward pass read as gradient x
input on the token embeddings, ``R_j = Σ_d x_jd · g̃_jd``; the modified gradient ``g̃``
implements the paper's rules:

- linear layers, residual additions: epsilon rule = the plain gradient (biases absorb relevance);
- RMSNorm / LayerNorm: identity rule = the normalising denominator treated as a constant;
- elementwise activations (SiLU, GELU): identity rule, ``g̃_in = g̃_out · f(x) / x``;
- the gated MLP's product ``act(gate) * up`` and attention's two matrix products ``Q K^T`` and
  ``A V``: uniform rule, each factor receives half the relevance (the gradient is halved);
- softmax: the paper's rule ``R_in = x (R_out − s Σ R_out)``, which in gradient x input form is
  the plain softmax gradient.

The rules act through forward hooks on the model's own modules (a hook returns a
replacement output of equal value whose gradient is the rule's) and through an attention
function registered with transformers' ``AttentionInterface`` for the call; all of them are
removed when the call ends, on error too, and the weights are never touched. Which module
plays which part is a small per-family table (:data:`FAMILIES`).

``tattr`` (Chefer et al., CVPR 2021) is the rollout of ``E_H(max(∇A ⊙ R_A, 0))`` (rows of
``I + Abar`` renormalised, read at the last position), where ``R_A = A ⊙ g̃_A`` is the
AttnLRP relevance of each layer's attention map and ``∇A`` the true gradient of the loss: a
second, plain forward + backward pass.

The explained quantity is the loss's own (the target logit by default); relevance starts as
``logits ⊙ ∂loss/∂logits``, which equals the loss for the logit and logit-difference losses.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from ..losses import Loss
from ..methods.rollout import rollout
from .model import Batch, LMAdapter

#: The relevance-propagation methods on a causal LM (served by :func:`run_lrp`).
LRP_METHODS = ("attnlrp", "tattr")

_PREFIX = "attngrad_attnlrp_"


@dataclass(frozen=True)
class Family:
    """Where a family's rules act: norm class-name suffixes, the activation and the gated product.

    Attributes:
        norms: suffixes of the normalisation modules' class names (identity rule).
        activation: the MLP's activation module, relative to a decoder layer (identity rule).
        product: the module whose input is the gated MLP's product ``act(gate) * up`` (its
            gradient is halved there: uniform rule), or ``None`` for an ungated MLP.
    """

    norms: tuple[str, ...]
    activation: str
    product: str | None


_LLAMA = Family(norms=("RMSNorm",), activation="mlp.act_fn", product="mlp.down_proj")

#: ``config.model_type`` -> its :class:`Family`.
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
    "gpt2": Family(norms=("LayerNorm",), activation="mlp.act", product=None),
}

#: The language-model method when none is chosen (``explain-lm``, the explorer's LM tab), and the one for
#: models outside :data:`FAMILIES` (:func:`default_method`).
DEFAULT_METHOD = "attnlrp"
FALLBACK_METHOD = "complete"


def default_method(kind: str | None) -> str:
    """The method a model of ``config.model_type`` ``kind`` is explained with when none is chosen:
    :data:`DEFAULT_METHOD` for a family it knows, else :data:`FALLBACK_METHOD`."""
    return DEFAULT_METHOD if kind in FAMILIES else FALLBACK_METHOD


class _Halve(torch.autograd.Function):
    """Identity forward, gradient halved: the uniform rule on one factor of a product of two."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * 0.5


def _halve(x: torch.Tensor) -> torch.Tensor:
    return _Halve.apply(x)


def family(model: nn.Module) -> Family:
    """The rule table of ``model``'s family; :class:`AttngradError` for a family without one."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in FAMILIES:
        raise AttngradError(f"attnlrp and tattr know the {', '.join(sorted(FAMILIES))} families, not {kind!r}; "
                            "use another method for this model")
    return FAMILIES[kind]


def _rms_rule(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    h = x.to(torch.float32)
    scale = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps).detach()
    return (module.weight * (h * scale).to(x.dtype)).to(output.dtype)


def _layer_norm_rule(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    centred = x - x.mean(dim=-1, keepdim=True)
    std = (centred.pow(2).mean(dim=-1, keepdim=True) + module.eps).sqrt().detach()
    y = centred / std
    if module.weight is not None:
        y = y * module.weight
    if module.bias is not None:
        y = y + module.bias
    return y


def _identity_rule(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    ratio = torch.where(x == 0, torch.zeros_like(output), output / torch.where(x == 0, torch.ones_like(x), x))
    return x * ratio.detach()


def _halve_input(module: nn.Module, args: tuple) -> tuple:
    return (_halve(args[0]), *args[1:])


def _attention_function(record: list[torch.Tensor]):
    """Eager attention with the uniform rule on ``Q K^T`` and ``A V``; each layer's map goes to ``record``."""

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        groups = query.shape[1] // key.shape[1]
        if groups > 1:  # grouped-query attention: a key/value head serves several query heads
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        scores = _halve(torch.matmul(query, key.transpose(-1, -2))) * scale
        if attention_mask is not None:
            mask = attention_mask[..., : key.shape[-2]]
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + mask
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        record.append(weights)
        output = _halve(torch.matmul(weights, value))
        return output.transpose(1, 2).contiguous(), weights

    return attention


@contextmanager
def lrp_rules(model: nn.Module, record: list[torch.Tensor] | None = None) -> Iterator[None]:
    """AttnLRP's rules on ``model``'s backward pass for the duration of the block (hooks, attention function).

    ``record`` (if given) receives every layer's attention map, first layer first. Nothing of
    the model is changed after the block, whether it ends normally or by an error.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    table = family(model)
    handles = []
    config: Any = model.config
    name = _PREFIX + uuid.uuid4().hex
    previous = config._attn_implementation
    try:
        for module in model.modules():
            kind = type(module).__name__
            if any(kind.endswith(suffix) for suffix in table.norms):
                rule = _layer_norm_rule if isinstance(module, nn.LayerNorm) else _rms_rule
                handles.append(module.register_forward_hook(rule))
        layers = _decoder_layers(model)
        for layer in layers:
            handles.append(layer.get_submodule(table.activation).register_forward_hook(_identity_rule))
            if table.product is not None:
                handles.append(layer.get_submodule(table.product).register_forward_pre_hook(_halve_input))
        AttentionInterface.register(name, _attention_function([] if record is None else record))
        AttentionMaskInterface.register(name, eager_mask)  # else a new name gets no mask at all
        config._attn_implementation = name
        yield
    finally:
        config._attn_implementation = previous
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)
        for handle in handles:
            handle.remove()


def _decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    for path in ("model.layers", "transformer.h"):
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        return list(layers)  # type: ignore[call-overload]
    raise AttngradError(f"{type(model).__name__}: no decoder layers found (model.layers or transformer.h)")


def run_lrp(
    adapter: LMAdapter,
    batch: Batch,
    methods: Sequence[str],
    loss: Loss,
    choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    *,
    start_layer: int = 0,
    targets: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """The AttnLRP pass (and for ``tattr`` one plain pass) over ``batch``.

    Returns ``(logits, targets, contrasts, maps)`` with a (B, N) map per method (0 on padding).
    """
    layers = adapter.num_layers
    if not 0 <= start_layer < layers:
        raise AttngradError(f"start_layer {start_layer} is out of range; this model has layers 0..{layers - 1}")
    family(adapter.model)
    want = [m for m in methods if m in LRP_METHODS]
    record: list[torch.Tensor] = []
    relevance: dict[int, torch.Tensor] = {}
    embeds = adapter.embed(batch.input_ids).requires_grad_(True)
    out: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), adapter.frozen_weights():
        with lrp_rules(adapter.model, record):
            logits = adapter.forward(embeds, batch, attentions=False).logits
        chosen = choose(logits.detach()) if targets is None else targets
        if "tattr" in want:
            for layer, attn in enumerate(record[start_layer:], start=start_layer):
                attn.register_hook(_keep_relevance(relevance, layer, attn))
        value = loss(logits, chosen[0], chosen[1])
        (grad,) = torch.autograd.grad(value.sum(), embeds)
        record.clear()
        out["attnlrp"] = (embeds.detach() * grad).sum(dim=-1)
        if "tattr" in want:
            plain = adapter.forward(embeds.detach().requires_grad_(True), batch)
            maps = list(plain.attentions[start_layer:])
            grads = torch.autograd.grad(loss(plain.logits, chosen[0], chosen[1]).sum(), maps)
            mixes = [(g * relevance[layer]).clamp(min=0).mean(dim=1)
                     for layer, g in enumerate(grads, start=start_layer)]
            out["tattr"] = rollout(mixes, -1, renormalize=True)
    mask = batch.attention_mask.to(logits.dtype)
    maps_out = {name: out[name].detach() * mask for name in want}
    return logits.detach(), chosen[0], chosen[1], maps_out


def _keep_relevance(store: dict[int, torch.Tensor], layer: int, attn: torch.Tensor):
    def hook(grad: torch.Tensor) -> None:
        store[layer] = (attn.detach() * grad).detach()

    return hook
