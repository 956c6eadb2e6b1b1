"""One forward and one backward pass per batch of prompts, serving every method at once.

For a causal LM the read row is the last prompt position (the one that predicts the next
token). Per layer ``Abar(l) = E_H(w(l) ⊙ A(l))`` with the rollout family's weightings
(:mod:`attngrad.methods.rollout`: ``complete`` eq. 5, ``gae`` eq. 4, ``absolute`` eq. 6,
``rollout`` / ``rollout_eq1`` with ``w = 1``), ``R = (I + Abar(L))···(I + Abar(1))`` and the
score of token ``j`` is ``(R − I)[last, j]`` (Cui, Fan & Chen, eqs. 1, 4-6; method.md).

The row ``e_last · R`` is formed from the last layer down, ``v <- v · (I + Abar(l))`` — the
order in which the backward pass delivers the gradients ``∂loss/∂A(l)``. So each layer's
weighting is formed by a hook the moment its gradient arrives, folded into the row, and the
gradient (B, H, N, N) and the map are released: no layer's gradient is ever held beside
another's, which is what lets long prompts fit (``benchmarks/lm_speed.py``).

``raw_attention`` is the last layer's head-mean row; ``grad_x_input`` is the classic
baseline ``Σ_d x_jd · ∂loss/∂x_jd`` over the token embeddings ``x`` (Shrikumar et al. 2016;
Simonyan et al. 2014 for the gradient); ``random`` draws uniform scores seeded by the
prompt's own token ids, so a prompt gets the same ranking in any batch.

``rollout`` (rows of ``I + Abar`` renormalised, Abnar & Zuidema) is read as ``R[last, j]``
without subtracting ``I``: its rows are distributions, and ``− I`` would put −1 on the last
token. On causal models it degenerates (the first token attends only to itself, so after
many layers nearly all mass sits on it); it is kept for completeness.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Sequence, cast

import torch

from ..errors import AttngradError
from ..losses import Loss
from ..methods import METHODS, Rollout
from .model import Batch, LMAdapter

#: The methods defined on a causal LM (rollout family + raw attention + input x gradient + random).
LM_METHODS = ("complete", "gae", "absolute", "rollout", "rollout_eq1", "raw_attention", "grad_x_input", "random",
              "attnlrp", "tattr")  # the last two: relevance propagation, served by attngrad.lm.attnlrp

#: Methods whose sign means support (+) / opposition (-); the others are magnitudes.
SIGNED = {"complete": True, "grad_x_input": True, "attnlrp": True, "tattr": False}


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate method names for language models (one-line error naming the choices)."""
    names = [m.strip() for m in methods if m and m.strip()]
    if not names:
        raise AttngradError(f"no method given; choose from {', '.join(LM_METHODS)}")
    for name in names:
        if name not in LM_METHODS:
            raise AttngradError(f"unknown method {name!r} for a language model; choose from {', '.join(LM_METHODS)}")
    return list(dict.fromkeys(names))


def signed(name: str) -> bool:
    """Whether a method's sign means support / opposition (else it is a magnitude)."""
    if name in SIGNED:
        return SIGNED[name]
    return bool(getattr(METHODS.get(name), "signed", name == "complete"))


@dataclass
class PassResult:
    """What one pass produced: logits (B, V) at the last position, the explained tokens, and a (B, N) map per method."""

    logits: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    maps: dict[str, torch.Tensor]


def _fold(row: torch.Tensor, method: Rollout, attn: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``row · (I + E_H(w ⊙ A))``, rows of ``I + M`` renormalised to sum 1 when the method asks."""
    mix = type(method).weighting(attn, grad).mean(dim=1)  # (B, N, N)
    if method.renormalize:
        sums = 1.0 + mix.sum(dim=-1)  # (B, N): row sums of I + M
        scaled = row / sums[:, None, :]  # v_i / s_i
        return scaled + torch.bmm(scaled, mix)
    return row + torch.bmm(row, mix)


def random_scores(batch: Batch) -> torch.Tensor:
    """Uniform [0, 1) scores over each prompt's real tokens, seeded by the CRC-32 of its token ids (0 on padding)."""
    out = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
    for i, n in enumerate(batch.lengths):
        seed = zlib.crc32(torch.tensor(batch.ids(i), dtype=torch.int64).numpy().tobytes())
        out[i, -n:] = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    return out.to(batch.input_ids.device)


def run(
    adapter: LMAdapter,
    batch: Batch,
    methods: Sequence[str],
    loss: Loss,
    choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    *,
    start_layer: int = 0,
) -> PassResult:
    """One forward (+ one backward when a method needs gradients) over ``batch`` for all ``methods``.

    Args:
        choose: maps the detached logits (B, V) to ``(targets, contrasts)`` (token ids, (B,)).
    """
    instances = {}
    layers = adapter.num_layers
    if not 0 <= start_layer < layers:
        raise AttngradError(f"start_layer {start_layer} is out of range; this model has layers 0..{layers - 1}")
    for name in methods:
        if name in ("grad_x_input", "random"):
            continue
        cls = METHODS[name]
        instances[name] = cls(start_layer=start_layer) if issubclass(cls, Rollout) else cls()
    rollouts = {k: m for k, m in instances.items() if isinstance(m, Rollout)}
    needs_grad = "grad_x_input" in methods or any(m.needs_gradients for m in instances.values())
    embeds = adapter.embed(batch.input_ids)
    if needs_grad:
        embeds.requires_grad_(True)
    with torch.set_grad_enabled(needs_grad), adapter.frozen_weights():
        forward = adapter.forward(embeds, batch)
        # the same list as forward.attentions: its entries are set to None as they are folded (released)
        logits, maps = forward.logits, cast(list, forward.attentions)
        targets, contrasts = choose(logits.detach())
        b, _, n, _ = maps[0].shape
        rows = {k: torch.zeros(b, 1, n, device=logits.device, dtype=maps[0].dtype) for k in rollouts}
        for r in rows.values():
            r[:, 0, -1] = 1.0
        out: dict[str, torch.Tensor] = {}
        if "raw_attention" in instances:
            out["raw_attention"] = maps[-1].detach().mean(dim=1)[:, -1]
        expected = [layers - 1]

        def fold(layer: int, attn: torch.Tensor, grad: torch.Tensor | None) -> None:
            for k, m in rollouts.items():
                if layer >= m.start_layer:
                    rows[k] = _fold(rows[k], m, attn, grad)

        if needs_grad:
            def hook_for(layer: int):
                def hook(grad: torch.Tensor) -> None:
                    if layer != expected[0]:  # the row must be folded last layer first
                        raise RuntimeError(f"attention gradient of layer {layer} arrived out of order")
                    expected[0] -= 1
                    with torch.no_grad():
                        fold(layer, maps[layer].detach(), grad)
                    maps[layer] = None  # release the map: the backward no longer needs our reference
                return hook

            if rollouts:
                for layer, attn in enumerate(maps):
                    attn.register_hook(hook_for(layer))
            else:
                maps.clear()
            value = loss(logits, targets, contrasts)
            (grad_embeds,) = torch.autograd.grad(value.sum(), embeds)
            if rollouts and expected[0] != -1:
                raise RuntimeError("not every layer's attention gradient arrived during the backward pass")
            if "grad_x_input" in methods:
                out["grad_x_input"] = (embeds.detach() * grad_embeds).sum(dim=-1)
        else:
            with torch.no_grad():
                for layer in reversed(range(layers)):
                    fold(layer, maps[layer], None)
        for k, r in rows.items():
            scores = r[:, 0].detach().clone()
            if not rollouts[k].renormalize:
                scores[:, -1] -= 1.0  # (R - I)[last, :]
            out[k] = scores
    if "random" in methods:
        out["random"] = random_scores(batch)
    mask = batch.attention_mask.to(logits.dtype)
    maps_out = {name: out[name].detach() * mask for name in methods}
    return PassResult(logits.detach(), targets, contrasts, maps_out)
