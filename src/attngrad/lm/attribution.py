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
from ..methods import METHODS, Method, Rollout
from ..methods.rollout import RolloutEngine
from .model import Batch, LMAdapter

#: The methods defined on a causal LM (rollout family + raw attention + input x gradient + random).
LM_METHODS = ("complete", "gae", "absolute", "rollout", "rollout_eq1", "raw_attention", "grad_x_input", "random",
              "attnlrp", "tattr", "ig")  # attnlrp, tattr: relevance propagation (attngrad.lm.attnlrp); ig: attngrad.lm.ig

#: Methods served by a path of their own (``steps`` passes per prompt, :func:`attngrad.lm.ig.batch_path`).
PATH_METHODS = ("ig",)

#: Methods whose sign means support (+) / opposition (-); the others are magnitudes.
SIGNED = {"complete": True, "grad_x_input": True, "attnlrp": True, "tattr": False, "ig": True}


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate method names for language models (one-line error naming the choices)."""
    names = [m.strip() for m in methods if m and m.strip()]
    if not names:
        raise AttngradError(f"no method given; choose from {', '.join(LM_METHODS)}")
    for name in names:
        if name not in LM_METHODS:
            raise AttngradError(f"unknown method {name!r} for a language model; choose from {', '.join(LM_METHODS)}")
    return list(dict.fromkeys(names))


def check_test_loss(loss: str, contrast: str | None) -> str | None:
    """The contrast a token test's ``loss`` explains against: ``"runner-up"`` when ``diff`` / ``normdiff``
    name none; a contrast with ``logit`` (or an unknown loss) is refused in one line."""
    if loss not in ("logit", "diff", "normdiff"):
        raise AttngradError(f"unknown loss {loss!r}; choose logit, diff or normdiff")
    if loss == "logit" and contrast is not None:
        raise AttngradError("a contrast needs --loss diff or normdiff")
    return "runner-up" if loss != "logit" and contrast is None else contrast


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
    streaming: bool | str = False,
) -> PassResult:
    """One forward (+ one backward when a method needs gradients) over ``batch`` for all ``methods``.

    Args:
        choose: maps the detached logits (B, V) to ``(targets, contrasts)`` (token ids, (B,)).
        streaming: how the maps reach the backward pass (:data:`attngrad.lm.memory.MODES`; :mod:`attngrad.lm.memory`
            chooses): ``False`` / ``"kept"``: every layer's maps kept from the forward pass (fastest, memory
            ``L · H · N²``); ``True`` / ``"maps"``: fused attention in the forward pass, each layer's maps recomputed
            from its saved queries and keys when its gradient arrives (one layer's maps at a time, about one more
            attention computation per layer); ``"layers"``: each whole layer recomputed in the backward pass
            (activation checkpointing: the least memory, about one more forward pass of time).
    """
    layers = adapter.num_layers
    if not 0 <= start_layer < layers:
        raise AttngradError(f"start_layer {start_layer} is out of range; this model has layers 0..{layers - 1}")
    instances = {name: _instance(name, start_layer) for name in methods if name not in ("grad_x_input", "random")}
    rollouts = {k: m for k, m in instances.items() if isinstance(m, Rollout)}
    needs_grad = "grad_x_input" in methods or any(m.needs_gradients for m in instances.values())
    embeds = adapter.embed(batch.input_ids)
    if needs_grad:
        embeds.requires_grad_(True)
    b, n = batch.input_ids.shape
    engine = RolloutEngine(rollouts, b, n, -1, dtype=embeds.dtype, device=embeds.device)
    out: dict[str, torch.Tensor] = {}
    with torch.set_grad_enabled(needs_grad), adapter.frozen_weights():
        mode = ("maps" if streaming is True else "kept" if streaming is False else streaming) if needs_grad else "kept"
        if mode == "layers":
            logits, grad_embeds = _streamed(adapter, batch, embeds, engine, instances, loss, choose, out)
        elif mode == "maps":
            logits, grad_embeds = _recomputed(adapter, batch, embeds, engine, instances, loss, choose, out)
        elif mode != "kept":
            raise AttngradError(f"unknown streaming mode {streaming!r}; choose from kept, maps, layers")
        else:
            logits, grad_embeds = _kept(adapter, batch, embeds, engine, instances, loss, choose, out, needs_grad)
        targets, contrasts = choose(logits)
    for k, r in engine.finish().items():
        scores = r.detach().clone()
        if not rollouts[k].renormalize:
            scores[:, -1] -= 1.0  # (R - I)[last, :]
        out[k] = scores
    if grad_embeds is not None and "grad_x_input" in methods:
        out["grad_x_input"] = (embeds.detach() * grad_embeds).sum(dim=-1)
    if "random" in methods:
        out["random"] = random_scores(batch)
    mask = batch.attention_mask.to(logits.dtype)
    maps_out = {name: out[name].detach() * mask for name in methods}
    return PassResult(logits, targets, contrasts, maps_out)


def _instance(name: str, start_layer: int) -> Method:
    cls = METHODS[name]
    return cls(start_layer=start_layer) if issubclass(cls, Rollout) else cls()


def _kept(adapter, batch, embeds, engine, instances, loss, choose, out, needs_grad):
    """Every layer's maps kept from the forward pass; each layer folded as its gradient arrives, then released."""
    forward = adapter.forward(embeds, batch)
    # the same list as forward.attentions: its entries are set to None as they are folded (released)
    logits, maps = forward.logits, cast(list, forward.attentions)
    targets, contrasts = choose(logits.detach())
    if "raw_attention" in instances:
        out["raw_attention"] = maps[-1].detach().mean(dim=1)[:, -1]
    if not needs_grad:
        with torch.no_grad():
            for layer in reversed(range(len(maps))):
                engine.fold(layer, maps[layer], None)
        return logits.detach(), None

    def hook_for(layer: int):
        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad():
                engine.fold(layer, maps[layer].detach(), grad)
            maps[layer] = None  # release the map: the backward no longer needs our reference
        return hook

    if engine.methods:
        for layer, attn in enumerate(maps):
            attn.register_hook(hook_for(layer))
    else:
        maps.clear()
    value = loss(logits, targets, contrasts)
    (grad_embeds,) = torch.autograd.grad(value.sum(), embeds)
    return logits.detach(), grad_embeds


def _recomputed(adapter, batch, embeds, engine, instances, loss, choose, out):
    """Fused attention in the forward pass (no map kept); each layer's maps recomputed from its saved queries and
    keys when the gradient of its attention output arrives, folded, and released."""
    state = {"layer": adapter.num_layers}
    last = adapter.num_layers - 1

    def on_gradient(module, weights: torch.Tensor, grad: torch.Tensor) -> None:
        state["layer"] -= 1  # the backward pass reaches the layers last to first
        layer = state["layer"]
        if getattr(module, "layer_idx", layer) != layer:
            raise RuntimeError(f"attention layer {module.layer_idx} reached where layer {layer} was expected")
        if layer == last and "raw_attention" in instances:
            out["raw_attention"] = weights[:, :, -1].mean(dim=1)
        if engine.methods:
            engine.fold(layer, weights, grad)

    with adapter.recompute_attention(on_gradient):
        logits = adapter.forward(embeds, batch, attentions=False).logits
        targets, contrasts = choose(logits.detach())
        value = loss(logits, targets, contrasts)
        (grad_embeds,) = torch.autograd.grad(value.sum(), embeds)
    if state["layer"] != 0:
        raise RuntimeError(f"the backward pass reached {adapter.num_layers - state['layer']} of "
                           f"{adapter.num_layers} attention layers")
    return logits.detach(), grad_embeds


def _streamed(adapter, batch, embeds, engine, instances, loss, choose, out):
    """No layer's maps kept: each decoder layer is recomputed in the backward pass (activation checkpointing);
    the recomputed maps are held only until that layer's gradient arrives and is folded."""
    recomputed: dict[int, torch.Tensor] = {}
    # layers run first to last in the forward pass and are recomputed last to first in the backward pass
    state = {"backward": False, "forward_layer": 0, "backward_layer": adapter.num_layers - 1}
    last = adapter.num_layers - 1

    def observe(module, weights: torch.Tensor) -> None:
        key = "backward_layer" if state["backward"] else "forward_layer"
        layer = state[key]
        state[key] += -1 if state["backward"] else 1
        if getattr(module, "layer_idx", layer) != layer:
            raise RuntimeError(f"attention layer {module.layer_idx} ran where layer {layer} was expected")
        if state["backward"]:  # the layer being recomputed: its maps, until its gradient arrives
            recomputed[layer] = weights.detach()
            return
        if layer == last and "raw_attention" in instances:
            out["raw_attention"] = weights.detach()[:, :, -1].mean(dim=1)
        if engine.methods and weights.requires_grad:
            weights.register_hook(hook_for(layer))

    def hook_for(layer: int):
        def hook(grad: torch.Tensor) -> None:
            with torch.no_grad():
                engine.fold(layer, recomputed.pop(layer), grad)
        return hook

    with adapter.observe_attention(observe), adapter.checkpointing():
        logits = adapter.forward(embeds, batch, attentions=False).logits
        targets, contrasts = choose(logits.detach())
        value = loss(logits, targets, contrasts)
        state["backward"] = True
        (grad_embeds,) = torch.autograd.grad(value.sum(), embeds)
    return logits.detach(), grad_embeds
