"""Relevance propagation (LRP) over real, unmodified Vision Transformers, batched.

The rules are those of Chefer, Gur & Wolf, "Transformer Interpretability Beyond
Attention Visualization" (CVPR 2021), as their reference code computes them
(method.md, "T-Attr ... as its authors' reference code computes it"):

- linear layers: LRP-alpha-beta with alpha = 1, beta = 0 (z+), bias ignored;
- LayerNorm, GELU, softmax, dropout: relevance passes through unchanged;
- residual ``y = a + b``: ``R_a = a R / y``, ``R_b = b R / y``, then both rescaled so their
  totals split ``sum R`` in the ratio ``|sum R_a| : |sum R_b|`` (sums per image);
- the residual fork: the two relevances are added;
- the bilinear products ``A V`` and ``Q K^T``: the z-rule through the product for each
  operand, then halved; the relevance reaching ``A(l)`` is ``R_A(l)``;
- the first layer (patch embedding) for full LRP: the z^B rule bounded by each image's
  minimum and maximum input value;
- safe division ``a / (b + 1e-9)``, 0 where ``b == 0``.

Not in the reference code: an optional ``epsilon`` (default 0, the authors' rules) that adds
``epsilon * sign(z)`` to the two signed z-rule denominators (the residual sum ``y = a + b`` and
the bilinear products ``x @ y``), LRP-epsilon style: entries of those denominators near 0 make
full LRP's pixel map change with input changes of 1e-5 (docs/results/lrp-stability.md).

The reference code patches model classes with ``relprop`` methods; here forward hooks
record the activations of the real Hugging Face / timm modules during the Explainer's
single forward pass (:func:`record_activations`), and :func:`propagate` walks the
recorded layer structure backwards with closed-form rules (no autograd). All sums are
per image, so each image of a batch gets the relevance it would get alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttngradError
from ._blocks import BlockLayout, ViTLayout, find_family, vit_layout

SUPPORTED = (
    "Hugging Face ViTForImageClassification / DeiTForImageClassification (CLS-token classifier) and "
    "timm VisionTransformer with class-token pooling (no layer scale, no q/k norm)"
)
EPS = 1e-9


# --------------------------------------------------------------------------- rules


def safe_divide(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``a / (b + eps)``, and 0 wherever ``b`` is exactly 0 (method.md; the reference code's ``safe_divide``).

    (The reference code also guards ``b == -eps`` exactly, where ``b + eps`` is 0; method.md does not,
    and a float equal to ``-1e-9`` is not met in practice, so that extra pass is left out.)
    """
    return (a / (b + eps)).masked_fill_(b == 0, 0)


def _divide_into(relevance: torch.Tensor, z: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """:func:`safe_divide` ``(relevance, z, eps)`` written into ``z``, a temporary of the caller's
    (the same values; no new tensors of that size on the hot path)."""
    zero = z == 0
    return torch.div(relevance, z.add_(eps), out=z).masked_fill_(zero, 0)


def _stabilised(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` (sign 0 counted as +), in place: the LRP-epsilon denominator."""
    if not epsilon:
        return z
    return z.add_(torch.where(z >= 0, epsilon, -epsilon))


def zplus_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    relevance: torch.Tensor,
    output: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """LRP-alpha1-beta0 (z+) through ``y = x W^T (+ b)``, bias ignored.

    With ``Z = x+ W+^T + x- W-^T`` and ``S = R / Z``: ``R_x = x+ * (S W+) + x- * (S W-)``.
    Computed through the identity ``x+ w+ + x- w- = (x w + |x| |w|) / 2`` (term by term):
    ``2Z = x W^T + |x| |W|^T`` and ``R_x = x * (S' W) + |x| * (S' |W|)`` with
    ``S' = R / (2Z + 2e-9) = S / 2``. Given the layer's recorded ``output`` (and ``bias``),
    ``x W^T = output - bias`` is reused: three matrix products instead of four.

    Args:
        x: layer input (..., in).
        weight: (out, in).
        relevance: relevance of the output (..., out).
        output, bias: the layer's own output ``x W^T + bias`` from the forward pass, and its bias.
    """
    x_abs, w_abs = x.abs(), weight.abs()
    if output is None:
        z2 = F.linear(x_abs, w_abs).add_(F.linear(x, weight))
    else:
        z2 = F.linear(x_abs, w_abs, None if bias is None else -bias).add_(output)
    s = _divide_into(relevance, z2, 2 * EPS)
    return (s @ weight).mul_(x).addcmul_(x_abs, s @ w_abs)


def concat_bias(layers: Sequence[nn.Linear]) -> torch.Tensor | None:
    """The biases of linear layers whose outputs are concatenated (``None`` when none has one)."""
    if all(lin.bias is None for lin in layers):
        return None
    return torch.cat([lin.weight.new_zeros(lin.out_features) if lin.bias is None else lin.bias for lin in layers])


def per_image_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first, kept broadcastable: (B, 1, ..., 1)."""
    return t.sum(dim=tuple(range(1, t.ndim)), keepdim=True)


def residual_split(
    a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor, *, epsilon: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance of ``y = a + b`` split between ``a`` and ``b``, conserving ``sum R`` per image.

    First ``R_a = a R / y``, ``R_b = b R / y``; then each is rescaled so that the totals are
    ``|sum R_a| / (|sum R_a| + |sum R_b|) * sum R`` and likewise for ``b``. With ``epsilon``,
    ``y`` is replaced by ``y + epsilon * sign(y)`` in the first step.
    """
    s = _divide_into(relevance, _stabilised(a + b, epsilon))
    r_a, r_b = a * s, s.mul_(b)
    sum_a, sum_b, total = per_image_sum(r_a), per_image_sum(r_b), per_image_sum(relevance)
    denom = sum_a.abs() + sum_b.abs()
    fact_a = safe_divide(sum_a.abs(), denom) * total
    fact_b = safe_divide(sum_b.abs(), denom) * total
    return r_a.mul_(safe_divide(fact_a, sum_a)), r_b.mul_(safe_divide(fact_b, sum_b))


def matmul_relevance(
    x: torch.Tensor, y: torch.Tensor, relevance: torch.Tensor, *, epsilon: float = 0.0, product: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The z-rule through a bilinear product ``Z = x @ y``, each operand's share halved.

    ``R_x = x * ((R / Z) @ y^T) / 2``, ``R_y = y * (x^T @ (R / Z)) / 2``: each operand alone
    would receive all of ``sum R``; halving keeps the total. With ``epsilon``, ``Z`` is replaced
    by ``Z + epsilon * sign(Z)`` (the relevance the epsilon absorbs is lost). ``product``: ``x @ y``
    when the forward pass already computed it (``A V``: the projection's recorded input), copied,
    not changed.
    """
    z = x @ y if product is None else product.clone(memory_format=torch.contiguous_format)
    s = _divide_into(relevance, _stabilised(z, epsilon)).mul_(0.5)
    return (s @ y.transpose(-1, -2)).mul_(x), (x.transpose(-1, -2) @ s).mul_(y)


def zb_conv(x: torch.Tensor, conv: nn.Conv2d, relevance: torch.Tensor) -> torch.Tensor:
    """The z^B rule for the first layer (pixels), bounded by each image's min ``L`` and max ``H``.

    ``Z = conv(x, W) - conv(L, W+) - conv(H, W-) + 1e-9``; ``S = R / Z``;
    ``R_x = x * conv^T(S, W) - L * conv^T(S, W+) - H * conv^T(S, W-)``.
    """
    if conv.padding not in ((0, 0), 0, "valid") or conv.dilation != (1, 1) or conv.groups != 1:
        raise AttngradError("the z^B rule here supports patch embeddings (no padding, dilation or groups)")
    w = conv.weight
    w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)
    low = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
    high = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)

    def forward(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inp, weight, stride=conv.stride)

    def transpose(s: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(s, weight, stride=conv.stride)
        # patches that do not tile the input exactly leave a border the conv never read
        return F.pad(out, (0, x.shape[-1] - out.shape[-1], 0, x.shape[-2] - out.shape[-2]))

    s = relevance / (forward(x, w) - forward(low, w_pos) - forward(high, w_neg) + EPS)
    return x * transpose(s, w) - low * transpose(s, w_pos) - high * transpose(s, w_neg)


# --------------------------------------------------------------------------- which models the rules fit


def _is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, (nn.Identity, nn.Dropout))


def _unsupported(model: nn.Module, why: str) -> AttngradError:
    return AttngradError(f"relevance propagation (tattr, lrp, partial_lrp) does not support "
                         f"{type(model).__name__} ({why}); supported: {SUPPORTED}")


def _hf_rules_apply(hf_model: nn.Module) -> str | None:
    """Why the rules do not fit a Hugging Face model (``None``: they do): a ViT/DeiT with a linear CLS classifier."""
    model: Any = hf_model
    if getattr(getattr(model, "config", None), "model_type", None) not in ("vit", "deit"):
        return "expected a ViT or DeiT (.vit or .deit) and a linear .classifier on the CLS token"
    if not isinstance(getattr(model, "classifier", None), nn.Linear):
        return "expected a linear .classifier on the CLS token"
    return None


def _timm_rules_apply(timm_model: nn.Module) -> str | None:
    """Why the rules do not fit a timm model (``None``: they do): class-token pooling, one linear head,
    plain pre-norm blocks (no layer scale, q/k norm or gate)."""
    model: Any = timm_model
    if getattr(model, "global_pool", "token") != "token" or not _is_identity(getattr(model, "fc_norm", None)):
        return "the classifier must read the class token (global_pool='token', no fc_norm)"
    if getattr(model, "dist_token", None) is not None or not isinstance(getattr(model, "head", None), nn.Linear):
        return "expected one linear head on the class token"
    for blk in model.blocks:
        attn, mlp = blk.attn, blk.mlp
        plain = all(_is_identity(getattr(m, n, None)) for m, n in
                    ((blk, "ls1"), (blk, "ls2"), (attn, "q_norm"), (attn, "k_norm"), (attn, "norm"), (mlp, "norm")))
        if not plain or getattr(attn, "gate", None) is not None or not isinstance(getattr(attn, "qkv", None), nn.Linear):
            return "blocks need a fused attn.qkv and no layer scale, q/k norm or gate"
    return None


#: Per family of :data:`._blocks.FAMILIES`: why the rules above do not fit a model (``None``: they do).
_RULES_APPLY = {"transformers": _hf_rules_apply, "timm": _timm_rules_apply}


def model_layout(model: nn.Module) -> ViTLayout:
    """The layer structure of a supported ViT (from :data:`._blocks.FAMILIES`); :class:`AttngradError`
    naming what is supported otherwise."""
    fam = find_family(model)
    if fam is None:
        raise _unsupported(model, "not a ViT/DeiT classifier")
    why = _RULES_APPLY[fam.name](model)
    if why is not None:
        raise _unsupported(model, why)
    try:
        return vit_layout(model, fam)
    except AttngradError as err:
        raise _unsupported(model, str(err)) from None


# --------------------------------------------------------------------------- recording


@dataclass
class BlockRecord:
    """One block's forward activations (detached references, no copies).

    ``x``: block input; ``h1``: norm1 output; ``qkv``: q/k/v linear outputs; ``ctx``: ``A V``
    before the output projection; ``attn_out``: its output; ``mid``: ``x + attn_out``;
    ``h2``: norm2 output; ``fc1_out``: fc1 output; ``act``: activation output (fc2 input);
    ``mlp_out``: fc2 output.
    """

    x: torch.Tensor | None = None
    h1: torch.Tensor | None = None
    qkv: list[torch.Tensor] = field(default_factory=list)
    ctx: torch.Tensor | None = None
    attn_out: torch.Tensor | None = None
    mid: torch.Tensor | None = None
    h2: torch.Tensor | None = None
    act: torch.Tensor | None = None
    fc1_out: torch.Tensor | None = None
    mlp_out: torch.Tensor | None = None


@dataclass
class Recording:
    """Activations of one forward pass of a supported ViT, filled by :func:`record_activations`."""

    layout: ViTLayout
    blocks: list[BlockRecord]
    pixels: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def check(self) -> None:
        if self.pooled is None or any(b.mlp_out is None for b in self.blocks):
            raise AttngradError("no activations were recorded: relevance methods need the Explainer's forward pass")


def _got(value: torch.Tensor | None, what: str) -> torch.Tensor:
    """A recorded activation; :class:`AttngradError` when the forward pass did not record it."""
    if value is None:
        raise AttngradError(f"no {what} was recorded: relevance methods need the Explainer's forward pass")
    return value


def _put(obj: object, **values: object) -> None:
    """Set attributes of a record from a forward hook."""
    for name, value in values.items():
        setattr(obj, name, value)


@contextmanager
def record_activations(model: nn.Module) -> Iterator[Recording]:
    """Forward hooks on the real modules that record what :func:`propagate` needs; removed on exit."""
    layout = model_layout(model)
    rec = Recording(layout, [BlockRecord() for _ in layout.blocks])
    handles = []

    def hook(setter):
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            setter(inputs[0].detach(), output.detach())

        return fn

    def on(module: nn.Module, setter) -> None:
        handles.append(module.register_forward_hook(hook(setter)))

    on(layout.patch_conv, lambda i, o: _put(rec, pixels=i))
    on(layout.head, lambda i, o: _put(rec, pooled=i, logits=o))
    for blk, r in zip(layout.blocks, rec.blocks):
        def block_input(i: torch.Tensor, o: torch.Tensor, r: BlockRecord = r) -> None:
            _put(r, x=i, h1=o)
            r.qkv.clear()

        on(blk.norm1, block_input)
        for lin in blk.qkv:
            on(lin, lambda i, o, r=r: r.qkv.append(o))
        on(blk.proj, lambda i, o, r=r: _put(r, ctx=i, attn_out=o))
        on(blk.norm2, lambda i, o, r=r: _put(r, mid=i, h2=o))
        on(blk.fc1, lambda i, o, r=r: _put(r, fc1_out=o))
        on(blk.fc2, lambda i, o, r=r: _put(r, act=i, mlp_out=o))
    try:
        yield rec
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- propagation


@dataclass
class Relevance:
    """What one propagation pass produced, per image.

    Attributes:
        attention: per layer, ``R_A(l)`` (B, H, N, N) (``None`` for layers below where it stopped).
        totals: ``{boundary: (B,) total relevance}`` in propagation order — ``logits``,
            ``head_input``, ``block{l}.output`` / ``.mid`` / ``.input`` (for layers whose input was
            reached), and with pixels ``embedding.tokens`` (after the position-embedding split:
            the position embeddings' share is not passed on), ``embedding.patches`` (without the
            CLS token's share) and ``pixels``.
        pixels: relevance at the input (B, C, H, W) when propagated that far, else ``None``.
        stop_layer: lowest layer whose ``R_A`` was computed (``-1``: propagated to the pixels).
    """

    attention: list[torch.Tensor | None]
    totals: dict[str, torch.Tensor]
    pixels: torch.Tensor | None
    stop_layer: int


def _heads(t: torch.Tensor, groups: int, heads: int) -> torch.Tensor:
    """(B, N, groups*H*d) -> (groups, B, H, N, d): the reference code's ``b n (g h d) -> g b h n d``."""
    b, n, _ = t.shape
    return t.reshape(b, n, groups, heads, -1).permute(2, 0, 3, 1, 4)


def _block(
    blk: BlockLayout, rec: BlockRecord, attn: torch.Tensor, relevance: torch.Tensor, stop: bool, totals: dict, name: str,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One block backwards; returns ``(R_A, R_input)`` (``R_input`` is ``None`` when ``stop``)."""
    mid, mlp_out, attn_out = _got(rec.mid, "norm2 input"), _got(rec.mlp_out, "MLP output"), _got(rec.attn_out, "attention output")
    r_mid_res, r_mlp = residual_split(mid, mlp_out, relevance, epsilon=epsilon)
    r_act = zplus_linear(_got(rec.act, "MLP activation"), blk.fc2.weight, r_mlp, mlp_out, blk.fc2.bias)
    r_h2 = zplus_linear(_got(rec.h2, "norm2 output"), blk.fc1.weight, r_act, rec.fc1_out, blk.fc1.bias)  # GELU: pass-through
    r_mid = r_mid_res + r_h2  # norm2 pass-through; the fork adds
    totals[f"{name}.mid"] = r_mid.sum(dim=(1, 2))
    r_x_res, r_attn_out = residual_split(_got(rec.x, "block input"), attn_out, r_mid, epsilon=epsilon)
    r_ctx = zplus_linear(_got(rec.ctx, "attention context"), blk.proj.weight, r_attn_out, attn_out, blk.proj.bias)
    qkv = torch.cat(rec.qkv, dim=-1)
    q, k, v = _heads(qkv, 3, blk.num_heads)
    (r_ctx,) = _heads(r_ctx, 1, blk.num_heads)
    (ctx,) = _heads(_got(rec.ctx, "attention context"), 1, blk.num_heads)
    r_attn, r_v = matmul_relevance(attn, v, r_ctx, epsilon=epsilon, product=ctx)  # O = A V; softmax / dropout: pass-through
    if stop:
        return r_attn, None
    r_q, r_kt = matmul_relevance(q, k.transpose(-1, -2), r_attn, epsilon=epsilon)  # A ~ Q K^T
    r_qkv = torch.stack([r_q, r_kt.transpose(-1, -2), r_v]).permute(1, 3, 0, 2, 4).flatten(2)
    r_h1 = zplus_linear(_got(rec.h1, "norm1 output"), blk.qkv_weight(), r_qkv, qkv, concat_bias(blk.qkv))
    r_x = r_x_res + r_h1  # norm1 pass-through; the fork adds
    totals[f"{name}.input"] = r_x.sum(dim=(1, 2))
    return r_attn, r_x


@torch.no_grad()
def propagate(
    rec: Recording, attentions: Sequence[torch.Tensor], targets: torch.Tensor, stop_layer: int = 0, *,
    epsilon: float = 0.0,
) -> Relevance:
    """Propagate a one-hot relevance at ``targets`` from the logits down the recorded model.

    Args:
        rec: activations of the forward pass (:func:`record_activations`).
        attentions: per layer ``A(l)`` (B, H, N, N) of the same pass.
        targets: (B,) class indices; the start is 1 at the target logit (not the logit's value).
        stop_layer: stop once ``R_A(stop_layer)`` is known (0: every layer, as T-Attr needs;
            the last layer: partial LRP); ``-1`` goes on through the embeddings to the pixels (LRP).
        epsilon: added as ``epsilon * sign(z)`` to the signed z-rule denominators (residual sums,
            ``A V`` and ``Q K^T``); 0 (the default) is the reference code's rules.
    """
    rec.check()
    lay = rec.layout
    num_layers = len(lay.blocks)
    if not -1 <= stop_layer < num_layers:
        raise AttngradError(f"stop_layer must be in -1..{num_layers - 1}, not {stop_layer}")
    head_w = lay.head.weight
    start = F.one_hot(targets.to(head_w.device), head_w.shape[0]).to(head_w.dtype)
    totals: dict[str, torch.Tensor] = {"logits": start.sum(dim=1)}
    pooled = _got(rec.pooled, "classifier input")
    r_pooled = zplus_linear(pooled, head_w, start, rec.logits, lay.head.bias)
    totals["head_input"] = r_pooled.sum(dim=1)
    # the CLS selection (index_select's z-rule); the final norm passes relevance through
    seq = _got(rec.blocks[-1].mid, "norm2 input")
    relevance = torch.zeros_like(seq)
    relevance[:, 0] = pooled * safe_divide(r_pooled, pooled)
    r_attn: list[torch.Tensor | None] = [None] * num_layers
    for layer in range(num_layers - 1, max(stop_layer, 0) - 1, -1):
        blk, r = lay.blocks[layer], rec.blocks[layer]
        totals[f"block{layer}.output"] = relevance.sum(dim=(1, 2))
        r_attn[layer], below = _block(blk, r, attentions[layer], relevance, layer == stop_layer, totals, f"block{layer}",
                                      epsilon)
        if below is None:  # stopped at this layer: the loop ends here
            break
        relevance = below
    pixels = _to_pixels(lay, rec, relevance, totals, epsilon) if stop_layer == -1 else None
    return Relevance(r_attn, totals, pixels, stop_layer)


def _to_pixels(lay: ViTLayout, rec: Recording, relevance: torch.Tensor, totals: dict, epsilon: float) -> torch.Tensor:
    """Embeddings backwards: the position-embedding addition, the patch tokens, the z^B patch conv."""
    emb, image = _got(rec.blocks[0].x, "embedding output"), _got(rec.pixels, "input image")
    b, c, h, w = image.shape
    gh, gw = h // lay.patch_conv.stride[0], w // lay.patch_conv.stride[1]
    pos = torch.zeros_like(emb[:1])
    if lay.pos_embed is not None:  # all tokens, or only the patches (timm ``no_embed_class``)
        if lay.pos_embed.shape[1] not in (emb.shape[1], gh * gw):
            raise AttngradError("LRP to the pixels needs the model's own position embeddings (no interpolation)")
        pos[:, emb.shape[1] - lay.pos_embed.shape[1]:] = lay.pos_embed.detach()
    r_tokens, _ = residual_split(emb - pos, pos.expand_as(emb), relevance, epsilon=epsilon)
    totals["embedding.tokens"] = r_tokens.sum(dim=(1, 2))
    r_patches = r_tokens[:, -gh * gw:].transpose(1, 2).reshape(b, -1, gh, gw)
    totals["embedding.patches"] = r_patches.sum(dim=(1, 2, 3))
    pixels = zb_conv(image, lay.patch_conv, r_patches)
    totals["pixels"] = pixels.sum(dim=(1, 2, 3))
    return pixels
