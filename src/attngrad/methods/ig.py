"""Integrated gradients with an explicit baseline, in the space of any layer (after Cui & Fan,
"The Neglected Baseline in Model Interpretation"; no public code, the choices below are ours).

A layer spec names the space the path runs in:

=================  =====================================================================
``input``          the model input: pixels (B, 3, H, W) or token embeddings (B, N, D)
``hidden:K``       block K's output, the residual stream after block K (B, N, D)
``attention:K``    layer K's attention probabilities (B, H, N, N), through the adapter's
                   attention override
=================  =====================================================================

K counts from 0; a negative K counts from the end (``-1``: the last block). The features of
the layer are replaced by the path point ``x' + α (x - x')`` (inputs directly, hidden states by a
forward hook on the block, attention maps by ``override_attention``); everything after the layer
is recomputed, everything before it is the input's own.

Baselines ``x'``: ``zero``; ``mean`` (the layer's features averaged over the input's positions:
pixels per channel, tokens over the sequence, attention rows over the queries, per head); ``blur``
(pixels only: the image blurred by a Gaussian of ``blur_sigma`` pixels); ``uniform`` (attention
only: every row uniform over the keys it attends to, ``1/n`` on the ``n`` keys where ``A > 0``,
so padding and causal masks are kept); ``pad`` / ``mask`` (token embeddings only: every position's embedding
replaced by that of the tokenizer's pad / mask token); or a tensor broadcastable to the layer's
features of the batch (B, ...).

Maps (signed) are per token: input and hidden features summed over the feature dimension
(pixels: over channels and the pixels of each patch; special tokens of an image model get no
pixel attribution), attention attributions summed over heads and query rows onto the key tokens.
The scores over all tokens (:meth:`IntegratedGradients.token_scores`) sum to the attribution total.

The first-order members of the family are the one-node right Riemann rule (``α = 1``, weight 1)
at baseline 0: ``(x - 0) ⊙ ∇f(x)``. At the input that is ``grad_x_input``; at ``attention:K``
it is the per-layer term ``∇A ⊙ A`` of ``complete`` (summed over heads and query rows).

The loss explained is ``trace.extras["loss"]`` when the trace carries one, else the target logit
(a trace with contrasts but no loss is refused: the two-class loss is not known).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch import nn

from ..errors import AttngradError
from ..losses import TargetLogit
from ..models.base import ImageAdapter, ModelAdapter
from ._blocks import find_family
from ._common import check_positive, check_range
from ._paths import RULES, PathResult, gaussian_blur, integrate
from .base import Method, Trace, register

BASELINES = ("zero", "mean", "blur", "uniform", "pad", "mask")
_LAYER = re.compile(r"^(input|hidden:-?\d+|attention:-?\d+)$")

BaselineLike = str | torch.Tensor


def check_layer_spec(name: str, layer: str) -> None:
    """Refuse a layer spec that is not ``input``, ``hidden:K`` or ``attention:K``."""
    if not isinstance(layer, str) or not _LAYER.match(layer.strip()):
        raise AttngradError(f"{name}: layer must be 'input', 'hidden:K' or 'attention:K' (K a block, from 0; "
                            f"-1 = the last), not {layer!r}")


def parse_layer(layer: str, layers: int, name: str = "ig") -> tuple[str, int]:
    """``(kind, K)`` of a layer spec for a model of ``layers`` blocks (K resolved from the end, checked)."""
    check_layer_spec(name, layer)
    kind, _, index = layer.strip().partition(":")
    if kind == "input":
        return kind, -1
    k = int(index)
    resolved = k + layers if k < 0 else k
    if not 0 <= resolved < layers:
        raise AttngradError(f"{name}: layer {layer!r} is out of range; this model has blocks 0..{layers - 1} "
                            f"(or -{layers}..-1 from the end)")
    return kind, resolved


def check_baseline(name: str, baseline: BaselineLike) -> None:
    """Refuse a baseline that is neither a known name nor a tensor."""
    if isinstance(baseline, torch.Tensor):
        if not bool(torch.isfinite(baseline).all()):
            raise AttngradError(f"{name}: the baseline tensor has NaN or infinite values")
        return
    if baseline not in BASELINES:
        raise AttngradError(f"{name}: unknown baseline {baseline!r}; choose from {', '.join(BASELINES)} or give a tensor")


def find_blocks(model: nn.Module, layers: int) -> list[nn.Module]:
    """The model's Transformer blocks: a ViT family's (:mod:`._blocks`), else the first ``nn.ModuleList``
    of ``layers`` modules (text encoders, causal LMs, CLIP towers)."""
    fam = find_family(model)
    if fam is not None:
        return list(fam.require(model, "blocks"))
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return list(module)
    raise AttngradError(f"{type(model).__name__}: cannot find its {layers} Transformer blocks for a hidden-state path")


def _output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, value: torch.Tensor) -> Any:
    return (value, *output[1:]) if isinstance(output, tuple) else value


class _Hooked:
    """A forward hook on one block that records its output or replaces it (removed on exit)."""

    def __init__(self, block: nn.Module, replace: torch.Tensor | None = None):
        self.block, self.replace, self.seen = block, replace, None

    def __enter__(self) -> "_Hooked":
        def hook(module, args, output):
            if self.replace is None:
                self.seen = _output(output).detach()
                return None
            return _replace(output, self.replace)

        self.handle = self.block.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


#: ``forward(items, inputs)``: logits (M, C) and maps of the rows ``items`` with model inputs ``inputs``.
Forward = Callable[[torch.Tensor, torch.Tensor], Any]
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _token_embedding(adapter: Any, which: str) -> torch.Tensor:
    """The embedding (D,) of the tokenizer's pad or mask token (text adapters and their views)."""
    for owner in (adapter, getattr(adapter, "text", None), getattr(adapter, "tower", None)):
        tokenizer, embed = getattr(owner, "tokenizer", None), getattr(owner, "embed", None)
        if tokenizer is not None and embed is not None:
            token_id = getattr(tokenizer, f"{which}_token_id", None)
            if token_id is None and which == "pad":
                token_id = getattr(owner, "pad_id", None)
            if token_id is None:
                raise AttngradError(f"the tokenizer has no {which} token; choose another baseline (zero, mean)")
            return embed(torch.tensor([[token_id]], device=adapter.device))[0, 0]
    raise AttngradError(f"baseline {which!r} needs a text model (token embeddings and a tokenizer)")


def make_baseline(kind: str, values: torch.Tensor, baseline: BaselineLike, *, adapter: Any = None,
                  blur_sigma: float = 10.0, name: str = "ig", mask: torch.Tensor | None = None) -> torch.Tensor:
    """The baseline ``x'`` (the shape of ``values``) of a layer's features ``values`` (see the module docstring).

    ``mask`` (B, N), 1 on real tokens: ``mean`` averages those only (a padded prompt's baseline is then
    that of the prompt alone)."""
    pixels = kind == "input" and values.dim() == 4
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(values.device, values.dtype).expand_as(values)
        except RuntimeError:
            raise AttngradError(f"{name}: the baseline tensor's shape {tuple(baseline.shape)} does not broadcast to the "
                                f"layer's {tuple(values.shape)}") from None
    if baseline == "zero":
        return torch.zeros_like(values)
    if baseline == "mean" and mask is not None and not pixels:
        real = mask.to(values.device, values.dtype)
        weight = real[:, None, :, None] if kind == "attention" else real[:, :, None]  # query rows / positions
        dim = 2 if kind == "attention" else 1
        mean = (values * weight).sum(dim, keepdim=True) / weight.sum(dim, keepdim=True).clamp(min=1)
        return mean.expand_as(values)
    if baseline == "mean":
        dims = (2, 3) if pixels else (2,) if kind == "attention" else (1,)
        return values.mean(dim=dims, keepdim=True).expand_as(values)
    if baseline == "blur":
        if not pixels:
            raise AttngradError(f"{name}: baseline 'blur' is for pixels (layer 'input' of an image model)")
        return gaussian_blur(values, blur_sigma)
    if baseline == "uniform":
        if kind != "attention":
            raise AttngradError(f"{name}: baseline 'uniform' is the uniform attention row; use it with layer 'attention:K'")
        allowed = (values > 0).to(values.dtype)  # the keys a row may attend to (padding, causal masks)
        return allowed / allowed.sum(dim=-1, keepdim=True).clamp(min=1)
    if kind != "input" or values.dim() != 3:
        raise AttngradError(f"{name}: baseline {baseline!r} replaces tokens; use it with layer 'input' of a text model")
    return _token_embedding(adapter, baseline).to(values.dtype).expand_as(values)


def layer_path(
    adapter: ModelAdapter,
    inputs: torch.Tensor,
    forward: Forward,
    score: Score,
    *,
    layer: str,
    baseline: BaselineLike = "zero",
    steps: int = 16,
    rule: str = "gauss_legendre",
    batch_size: int = 64,
    whole_batch: bool = False,
    attentions: list[torch.Tensor] | None = None,
    blur_sigma: float = 10.0,
    name: str = "ig",
    mask: torch.Tensor | None = None,
) -> tuple[str, PathResult]:
    """Integrated gradients of ``score(items, logits)`` in the space of ``layer`` for a batch of ``inputs``.

    ``forward(items, inputs[items])`` runs the model on rows ``items``; ``attentions`` are the
    input's maps when known (else one more forward pass records them). Returns the layer kind and
    the :class:`~._paths.PathResult`. ``mask`` (B, N): real tokens, for the ``mean`` baseline of padded batches.
    """
    kind, k = parse_layer(layer, adapter.num_layers, name)
    inputs = inputs.detach()
    everything = torch.arange(inputs.shape[0], device=inputs.device)
    if kind == "input":
        values = inputs

        def run(items: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            return score(items, forward(items, points).logits)

    elif kind == "hidden":
        block = find_blocks(adapter.model, adapter.num_layers)[k]
        with torch.no_grad(), _Hooked(block) as seen:
            forward(everything, inputs)
        assert seen.seen is not None
        values = seen.seen

        def run(items: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            with _Hooked(block, points):
                return score(items, forward(items, inputs[items]).logits)

    else:
        if attentions is None:
            with torch.no_grad():
                attentions = [a.detach() for a in forward(everything, inputs).attentions]
        values = attentions[k].detach()

        def run(items: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            maps: list[torch.Tensor | None] = [None] * adapter.num_layers
            maps[k] = points
            with adapter.override_attention(maps):  # the model's own masks kept (models/hf.py)
                return score(items, forward(items, inputs[items]).logits)

    base = make_baseline(kind, values, baseline, adapter=adapter, blur_sigma=blur_sigma, name=name, mask=mask)
    with adapter.frozen_weights():
        result = integrate(run, values, base, rule=rule, steps=steps, batch_size=batch_size, whole_batch=whole_batch)
    return kind, result


def token_attributions(kind: str, attributions: torch.Tensor, num_prefix_tokens: int = 0,
                       patch_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-token scores (B, N) of a layer's attributions (see the module docstring for the reduction)."""
    if kind == "attention":
        return attributions.sum(dim=(1, 2))
    if attributions.dim() == 4:  # pixels: channels, then each patch's pixels; special tokens get 0
        if patch_size is None:
            raise AttngradError("pixel attributions need the model's patch size to become a patch map")
        ph, pw = patch_size
        b, _, h, w = attributions.shape
        gh, gw = h // ph, w // pw
        per_pixel = attributions.sum(dim=1)[:, : gh * ph, : gw * pw]
        patches = per_pixel.reshape(b, gh, ph, gw, pw).sum(dim=(2, 4)).reshape(b, gh * gw)
        return torch.cat([patches.new_zeros(b, num_prefix_tokens), patches], dim=1)
    return attributions.sum(dim=-1)


def trace_loss(trace: Trace, name: str) -> Callable[..., torch.Tensor]:
    """The loss of the trace (``extras["loss"]``), else the target logit; a trace with contrasts needs its loss."""
    loss = trace.extras.get("loss")
    if loss is not None:
        return loss
    if trace.contrasts is not None:
        raise AttngradError(f"{name}: this pass used a two-class loss that the method cannot see; "
                            "explain the target logit (loss 'logit') with it")
    return TargetLogit()


@register
class IntegratedGradients(Method):
    """Integrated gradients from an explicit baseline, at any layer (signed; see the module docstring).

    Args:
        layer: ``input`` (default), ``hidden:K`` or ``attention:K``.
        baseline: ``zero`` (default), ``mean``, ``blur``, ``uniform``, ``pad``, ``mask`` or a tensor.
        steps: quadrature intervals (Riemann, trapezoid) or nodes (Gauss–Legendre); default 16.
        rule: ``gauss_legendre`` (default), ``trapezoid``, ``riemann_left`` or ``riemann_right``.
        batch_size: path points per forward + backward pass (default 64).
        blur_sigma: the ``blur`` baseline's Gaussian, in pixels (default 10).

    Cost per item: ``steps`` forward + backward passes (``steps + 1`` for the trapezoid), plus a
    forward pass for each end (α = 0, 1) the rule's nodes miss (for the attribution error).
    """

    name = "ig"
    description = "integrated gradients from an explicit baseline at any layer (input, hidden:K, attention:K): signed"
    signed = True
    needs_gradients = False
    default_rule = "gauss_legendre"
    default_steps = 16

    def __init__(self, *, layer: str = "input", baseline: BaselineLike = "zero", steps: int | None = None,
                 rule: str | None = None, batch_size: int = 64, blur_sigma: float = 10.0):
        self.layer = layer
        self.baseline = baseline
        self.steps = self.default_steps if steps is None else steps
        self.rule = self.default_rule if rule is None else rule
        self.batch_size = batch_size
        self.blur_sigma = blur_sigma
        check_layer_spec(self.name, layer)
        check_baseline(self.name, baseline)
        check_positive(self.name, steps=self.steps, batch_size=batch_size)
        check_range(self.name, "blur_sigma", blur_sigma, 0.0, 1000.0, open_low=True)
        if self.rule not in RULES:
            raise AttngradError(f"{self.name}: unknown rule {self.rule!r}; choose from {', '.join(RULES)}")

    @property
    def key(self) -> str:
        """Where the trace keeps this configuration's :class:`~._paths.PathResult` (``extras[key]``)."""
        base = "tensor" if isinstance(self.baseline, torch.Tensor) else self.baseline
        if base == "blur":
            base = f"blur:{self.blur_sigma}"
        return f"ig[{self.layer},{base},{self.rule},{self.steps}]"

    def path(self, trace: Trace) -> tuple[str, PathResult]:
        """The layer kind and the path result for the trace (computed once per trace and configuration)."""
        if self.key in trace.extras and not isinstance(self.baseline, torch.Tensor):
            return trace.extras[self.key]
        adapter = trace.adapter
        loss = trace_loss(trace, self.name)
        targets = trace.targets
        contrasts = trace.contrasts

        def score(items: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            c = None if contrasts is None else contrasts.to(logits.device)[items]
            return loss(logits, targets.to(logits.device)[items], c)

        def forward(items: torch.Tensor, inputs: torch.Tensor) -> Any:
            return adapter.forward(inputs)

        found = layer_path(adapter, trace.pixel_values, forward, score, layer=self.layer, baseline=self.baseline,
                           steps=self.steps, rule=self.rule, batch_size=self.batch_size,
                           whole_batch=not isinstance(adapter, ImageAdapter), attentions=trace.attentions,
                           blur_sigma=self.blur_sigma, name=self.name,
                           mask=getattr(adapter, "attention_mask", None))  # text: real tokens only (mean baseline)
        trace.extras[self.key] = found
        return found

    def token_scores(self, trace: Trace) -> torch.Tensor:
        kind, result = self.path(trace)
        patch = getattr(trace.adapter, "patch_size", None)
        return token_attributions(kind, result.attributions, trace.num_prefix_tokens, patch)


@register
class GradXInput(IntegratedGradients):
    """Gradient x input, ``x ⊙ ∇f(x)`` summed per token: the first-order member of the family,
    integrated gradients at the input with baseline 0 and the one-node right Riemann rule (α = 1)."""

    name = "grad_x_input"
    description = "gradient x input: first-order term at input baseline 0 (integrated gradients, 1 node at alpha=1)"

    def __init__(self, *, batch_size: int = 64):
        super().__init__(layer="input", baseline="zero", steps=1, rule="riemann_right", batch_size=batch_size)
