"""Where the rival methods reach inside a ViT: its blocks, their value path, the token sequence.

TAM/BI's integrated gradient, BI-token and TIS need more than attention maps: the
blocks' inputs, the value and output projections, the embedded tokens. This module is
the one per-architecture table of where those live:

========================  ==========================  ==================================
part                      Hugging Face ViT / DeiT     timm ViT / DeiT
========================  ==========================  ==================================
blocks                    ``base_model.layers``       ``blocks``
                          (older: ``encoder.layer``)
first LayerNorm           ``layernorm_before``        ``norm1``
value projection          ``attention.v_proj``        ``attn.qkv`` (third third)
                          (older: ``.attention.value``)
attention output proj.    ``attention.o_proj``        ``attn.proj``
                          (older: ``.output.dense``)
embedded tokens           ``base_model.embeddings``   ``pos_drop``
========================  ==========================  ==================================
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttngradError


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


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and not hasattr(model, "config")


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's Transformer blocks, first first."""
    found: Any = model.blocks if _is_timm(model) else _path(model, "base_model.layers", "base_model.encoder.layer")
    if found is None:
        raise AttngradError(
            f"{type(model).__name__}: cannot find its Transformer blocks; this method supports Hugging Face "
            "ViT/DeiT and timm ViT/DeiT models"
        )
    return list(found)


def value_output(block: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``(LN1(z) W_V^T + b_V) W_O^T``: a block's value path without the output bias, (B, N, D).

    ``z`` is the block's input (the residual stream); BI-token's ``get_vproj`` (Chen et al.).
    """
    if hasattr(block, "norm1") and hasattr(getattr(block, "attn", None), "qkv"):  # timm
        timm_block: Any = block  # timm's Block: attn.qkv, attn.proj (checked just above)
        width = z.shape[-1]
        qkv = timm_block.attn.qkv
        bias = None if qkv.bias is None else qkv.bias[2 * width : 3 * width]
        v = F.linear(timm_block.norm1(z), qkv.weight[2 * width : 3 * width], bias)
        return F.linear(v, timm_block.attn.proj.weight)
    norm = getattr(block, "layernorm_before", None)
    value = _path(block, "attention.v_proj", "attention.attention.value")
    out = _path(block, "attention.o_proj", "attention.output.dense")
    if norm is None or value is None or out is None:
        raise AttngradError(
            f"{type(block).__name__}: cannot find the block's LayerNorm, value and output projections; "
            "this method supports Hugging Face ViT/DeiT and timm ViT/DeiT models"
        )
    return F.linear(value(norm(z)), out.weight)


def embedding_module(model: nn.Module) -> nn.Module:
    """The module whose output is the token sequence entering the first block (B, N, D)."""
    found = model.pos_drop if _is_timm(model) and hasattr(model, "pos_drop") else _path(model, "base_model.embeddings")
    if not isinstance(found, nn.Module):
        raise AttngradError(f"{type(model).__name__}: cannot find its token embedding; use a ViT/DeiT model")
    return found


def _first(args: tuple, kwargs: dict) -> torch.Tensor:
    found = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
    if not isinstance(found, torch.Tensor):
        raise AttngradError("a Transformer block was called without its input tensor (positional, hidden_states= or x=)")
    return found


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
        z = _first(args, kwargs).detach().requires_grad_(True)
        if args:
            return (z, *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else "x"
        return args, {**kwargs, key: z}

    handle = last.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            return adapter.forward(pixel_values)
    finally:
        handle.remove()


def first_norm(block: nn.Module) -> nn.Module:
    """A block's first LayerNorm (timm ``norm1``, Hugging Face ``layernorm_before``)."""
    found = _path(block, "norm1", "layernorm_before")
    if found is None:
        raise AttngradError(f"{type(block).__name__}: cannot find its first LayerNorm; use a ViT/DeiT model")
    return found


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

    handle = first_norm(blocks(model)[-1]).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
