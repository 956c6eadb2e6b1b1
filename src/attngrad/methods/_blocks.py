"""Where the methods reach inside a ViT: one declarative table of each family's parts.

TAM/BI's integrated gradient, BI-token, TIS, ViT-CX and the relevance propagation of T-Attr /
LRP (:mod:`.relprop`) need more than attention maps: the blocks and their inputs, the value
and output projections, the embedded tokens, the layers LRP walks back through. :data:`FAMILIES`
says where each family keeps them, as dotted attribute paths (alternatives in order, the first
that exists wins), in the manner of LXT's per-architecture tables; :func:`family` picks the
family whose blocks and token embedding are found on the model (the one place that tells a
timm ViT from a Hugging Face one), and everything else reads the table:

=================  ====================================================  ===================
part               Hugging Face ViT / DeiT                               timm ViT / DeiT
=================  ====================================================  ===================
blocks             ``base_model.layers`` (older: ``.encoder.layer``)     ``blocks``
embedded tokens    ``base_model.embeddings``                             ``pos_drop``
patch embedding    ``base_model.embeddings.patch_embeddings.projection``  ``patch_embed.proj``
position emb.      ``base_model.embeddings.position_embeddings``         ``pos_embed``
classifier         ``classifier``                                        ``head``
first LayerNorm    ``layernorm_before``                                  ``norm1``
q, k, v            ``attention.{q,k,v}_proj`` (older ``.attention.``     ``attn.qkv`` (fused)
                   ``{query,key,value}``)
output proj.       ``attention.o_proj`` (older: ``.output.dense``)       ``attn.proj``
second LayerNorm   ``layernorm_after``                                   ``norm2``
MLP                ``mlp.fc1``, ``mlp.fc2``                              ``mlp.fc1``, ``mlp.fc2``
heads              ``attention.num_attention_heads``                     ``attn.num_heads``
=================  ====================================================  ===================
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttngradError

_FAMILIES_SUPPORTED = "this method supports Hugging Face ViT/DeiT and timm ViT/DeiT models"


def _path(obj: Any, *names: str) -> Any:
    """The first dotted attribute path of ``names`` that exists on ``obj`` (``None`` if none does)."""
    for name in names:
        cur = obj
        for part in name.split("."):
            cur = getattr(cur, part, None)
            if cur is None:
                break
        if cur is not None:
            return cur
    return None


@dataclass(frozen=True)
class Family:
    """Where one family of ViT classifiers keeps its parts: per part, dotted paths tried in order.

    ``blocks`` .. ``head`` are paths on the model, the rest on one block. ``qkv`` lists
    alternatives of the query, key and value linears: three separate ones, or one fused
    linear whose output is ``(q, k, v)`` concatenated.
    """

    name: str
    blocks: tuple[str, ...]
    embeddings: tuple[str, ...]
    patch_conv: tuple[str, ...]
    pos_embed: tuple[str, ...]
    head: tuple[str, ...]
    norm1: tuple[str, ...]
    qkv: tuple[tuple[str, ...], ...]
    proj: tuple[str, ...]
    norm2: tuple[str, ...]
    fc1: tuple[str, ...]
    fc2: tuple[str, ...]
    heads: tuple[str, ...]

    def find(self, obj: Any, part: str) -> Any:
        """``part`` (a field name) of ``obj`` (the model or a block), or ``None`` when it has none."""
        return _path(obj, *getattr(self, part))

    def require(self, obj: Any, part: str) -> Any:
        """:meth:`find`, refusing a part that is not there (naming where it was looked for)."""
        found = self.find(obj, part)
        if found is None:
            raise AttngradError(
                f"{type(obj).__name__}: cannot find its {part} (looked for {' or '.join(getattr(self, part))}); "
                + _FAMILIES_SUPPORTED
            )
        return found

    def qkv_linears(self, block: nn.Module) -> list[nn.Linear]:
        """The block's query, key and value linears (three), or its one fused linear."""
        for paths in self.qkv:
            found = [_path(block, p) for p in paths]
            if all(isinstance(f, nn.Linear) for f in found):
                return found
        raise AttngradError(
            f"{type(block).__name__}: cannot find its query, key and value projections "
            f"(looked for {' or '.join(', '.join(p) for p in self.qkv)}); " + _FAMILIES_SUPPORTED
        )


#: The families of ViT classifiers the methods reach inside (see the module docstring's table).
FAMILIES: tuple[Family, ...] = (
    Family(
        "transformers",
        blocks=("base_model.layers", "base_model.encoder.layer"),
        embeddings=("base_model.embeddings",),
        patch_conv=("base_model.embeddings.patch_embeddings.projection",),
        pos_embed=("base_model.embeddings.position_embeddings",),
        head=("classifier",),
        norm1=("layernorm_before",),
        qkv=(("attention.q_proj", "attention.k_proj", "attention.v_proj"),
             ("attention.attention.query", "attention.attention.key", "attention.attention.value")),
        proj=("attention.o_proj", "attention.output.dense"),
        norm2=("layernorm_after",),
        fc1=("mlp.fc1",),
        fc2=("mlp.fc2",),
        heads=("attention.num_attention_heads",),
    ),
    Family(
        "timm",
        blocks=("blocks",),
        embeddings=("pos_drop",),
        patch_conv=("patch_embed.proj",),
        pos_embed=("pos_embed",),
        head=("head",),
        norm1=("norm1",),
        qkv=(("attn.qkv",),),
        proj=("attn.proj",),
        norm2=("norm2",),
        fc1=("mlp.fc1",),
        fc2=("mlp.fc2",),
        heads=("attn.num_heads",),
    ),
)  # fmt: skip


def find_family(model: nn.Module) -> Family | None:
    """The first family of :data:`FAMILIES` whose blocks and token embedding the model has (``None``: none)."""
    for fam in FAMILIES:
        if isinstance(fam.find(model, "blocks"), (nn.ModuleList, nn.Sequential)) and isinstance(
            fam.find(model, "embeddings"), nn.Module
        ):
            return fam
    return None


def family(model: nn.Module) -> Family:
    """:func:`find_family`, refusing a model of no known family."""
    found = find_family(model)
    if found is None:
        raise AttngradError(f"{type(model).__name__}: cannot find its Transformer blocks; " + _FAMILIES_SUPPORTED)
    return found


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's Transformer blocks, first first."""
    return list(family(model).require(model, "blocks"))


@dataclass
class BlockLayout:
    """The modules of one pre-norm Transformer block, in forward order.

    ``qkv`` is one fused linear (timm) or the query, key and value linears (Hugging Face):
    their outputs concatenated are laid out ``(qkv, head, head_dim)`` as in the reference code.
    """

    norm1: nn.Module
    qkv: list[nn.Linear]
    proj: nn.Linear
    norm2: nn.Module
    fc1: nn.Linear
    fc2: nn.Linear
    num_heads: int

    def qkv_weight(self) -> torch.Tensor:
        return torch.cat([lin.weight for lin in self.qkv], dim=0)


@dataclass
class ViTLayout:
    """Where the parts of a ViT classifier are: patch embedding, blocks, final norm, CLS classifier."""

    patch_conv: nn.Conv2d
    pos_embed: torch.Tensor | None
    blocks: list[BlockLayout]
    head: nn.Linear


def vit_layout(model: nn.Module, fam: Family | None = None) -> ViTLayout:
    """Every part of the model from the table (:class:`AttngradError` naming the first one missing)."""
    fam = fam or family(model)

    def block(b: nn.Module) -> BlockLayout:
        parts = {k: fam.require(b, k) for k in ("norm1", "proj", "norm2", "fc1", "fc2", "heads")}
        return BlockLayout(parts["norm1"], fam.qkv_linears(b), parts["proj"], parts["norm2"], parts["fc1"],
                           parts["fc2"], int(parts["heads"]))  # fmt: skip

    return ViTLayout(fam.require(model, "patch_conv"), fam.find(model, "pos_embed"),
                     [block(b) for b in fam.require(model, "blocks")], fam.require(model, "head"))  # fmt: skip


def value_output(block: nn.Module, z: torch.Tensor, fam: Family) -> torch.Tensor:
    """``(LN1(z) W_V^T + b_V) W_O^T``: a block's value path without the output bias, (B, N, D).

    ``z`` is the block's input (the residual stream); BI-token's ``get_vproj`` (Chen et al.).
    The value projection is the third of the query, key and value linears, or the last third
    of a fused one.
    """
    qkv = fam.qkv_linears(block)
    weight: torch.Tensor
    bias: torch.Tensor | None
    if len(qkv) == 3:
        weight, bias = qkv[2].weight, qkv[2].bias
    else:
        width = z.shape[-1]
        weight = qkv[0].weight[2 * width : 3 * width]
        bias = None if qkv[0].bias is None else qkv[0].bias[2 * width : 3 * width]
    v = F.linear(fam.require(block, "norm1")(z), weight, bias)
    return F.linear(v, fam.require(block, "proj").weight)


def embedding_module(model: nn.Module) -> nn.Module:
    """The module whose output is the token sequence entering the first block (B, N, D)."""
    return family(model).require(model, "embeddings")


def _first(args: tuple, kwargs: dict) -> torch.Tensor:
    found = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
    if not isinstance(found, torch.Tensor):
        raise AttngradError("a Transformer block was called without its input tensor (positional, hidden_states= or x=)")
    return found


def _with_first(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    """A forward pre-hook's return: the block's call with its input tensor replaced by ``value``."""
    if args:
        return (value, *args[1:]), kwargs
    key = "hidden_states" if "hidden_states" in kwargs else "x"
    return args, {**kwargs, key: value}


@contextmanager
def record_block_inputs(model: nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Append every block's input ``z_l`` (detached) to ``store`` during the forward passes inside."""

    def hook(module, args, kwargs):
        store.append(_first(args, kwargs).detach())

    handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in blocks(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_block_outputs(model: nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Append every block's output (detached) to ``store`` during the forward passes inside."""

    def hook(module, args, output):
        store.append((output[0] if isinstance(output, tuple) else output).detach())

    handles = [b.register_forward_hook(hook) for b in blocks(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def forward_from_last_block(adapter: Any, pixel_values: torch.Tensor) -> Any:
    """``adapter.forward`` with an autograd graph from the last block on only.

    Gradients are off until the last block starts; its input becomes a fresh leaf and
    gradients are on from there to the logits, so the last layer's attention and the logits
    can be differentiated. The values are those of a plain forward; the earlier blocks keep
    no activations for backward (the integrated gradient needs the last layer only).
    """
    last = blocks(adapter.model)[-1]

    def hook(module, args, kwargs):
        torch.set_grad_enabled(True)  # restored when the no_grad block below is left
        return _with_first(args, kwargs, _first(args, kwargs).detach().requires_grad_(True))

    handle = last.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            return adapter.forward(pixel_values)
    finally:
        handle.remove()


@contextmanager
def branch_at_block(model: nn.Module, layer: int, copies: int, store: list[torch.Tensor]) -> Iterator[None]:
    """Inside, block ``layer``'s input ``z`` (B, N, D) is repeated ``copies`` times per sequence (rows ``b * copies +
    c``): the blocks before ``layer`` run once per sequence, the blocks from ``layer`` on once per copy.

    The repeated input is a fresh leaf, so a backward pass from the output stops there; ``store`` receives ``z``
    (still in the earlier blocks' graph) and the leaf, so that the copies' gradients at the leaf can be carried
    on through the earlier blocks separately (``torch.autograd.grad(z, ..., is_grads_batched=True)``)."""

    def hook(module, args, kwargs):
        z = _first(args, kwargs)
        copied = z.detach().repeat_interleave(copies, dim=0).requires_grad_(True)
        store.extend([z, copied])
        return _with_first(args, kwargs, copied)

    handle = blocks(model)[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def keep_tokens(model: nn.Module, tokens: torch.Tensor, images: torch.Tensor) -> Iterator[None]:
    """Inside, the embedded sequence of the forward's input ``images[i]`` is replaced by its
    tokens ``tokens[i]`` (c, k) for row ``i``: the batch becomes ``len(tokens)`` sequences of
    ``k`` tokens each (TIS's token sampling after the position embedding)."""

    def hook(module, args, output):
        seq = output[0] if isinstance(output, tuple) else output
        return seq[images[:, None], tokens]

    handle = embedding_module(model).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def record_last_norm(model: nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Append the last block's first-LayerNorm output (detached) to ``store`` (ViT-CX's features)."""

    def hook(module, args, output):
        store.append(output.detach())

    fam = family(model)
    handle = fam.require(fam.require(model, "blocks")[-1], "norm1").register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
