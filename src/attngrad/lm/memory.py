"""How much memory explaining a batch of prompts needs, the way to run it, and a refusal before a run that cannot fit.

Three ways (:data:`MODES`; :func:`attngrad.lm.attribution.run`):

- ``kept``: every layer's attention probabilities (B, H, N, N) kept from an eager forward pass for
  the backward pass (each layer's gradient is folded into the read row as it arrives and released),
  ``(L + 3) · B · H · N² · bytes`` plus the weights. On SmolLM2-135M (30 layers, 9 heads, float32)
  that is 17 GB at 4,000 tokens, where a run under an 18 GB limit ran out of memory. Fastest.
- ``maps``: fused attention (no N x N map kept) in the forward pass; each layer's maps are
  recomputed from its saved queries and keys when its gradient arrives: one layer's maps at a time
  (``STREAMED_MAPS · B · H · N²``) beside the activations a plain fused forward + backward keeps
  (about ``L · B · N · (8 D + 4 D_mlp)``). Costs one more attention computation per layer.
- ``layers``: activation checkpointing of every layer (only each layer's input kept; the layer is
  recomputed in the backward pass): the least memory, about one more forward pass of time.

:func:`plan` takes the first that fits (``kept``, then ``maps``, then ``layers``) and refuses in one line
when none does.
"""

from __future__ import annotations

import os

import torch

from ..errors import AttngradError

#: The ways to run an explanation pass, from the fastest to the leanest.
MODES = ("kept", "maps", "layers")

#: N x N tensors (B, H, N, N) of one layer alive at once when maps are recomputed in the backward
#: pass: SmolLM2 at 8,192 tokens peaked at 9.7 GB above the loaded model, about 4 of them (docs/lm.md).
STREAMED_MAPS = 4


def needed_bytes(model: torch.nn.Module, batch: int, tokens: int, *, mode: str = "kept") -> int:
    """Estimated peak bytes of one explanation pass over ``batch`` prompts of ``tokens`` tokens in ``mode``
    (see the module's text for each mode's terms), weights included."""
    config = getattr(model, "config", None)
    layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1)
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1)
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1)
    mlp = int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden)
    size = next(model.parameters()).element_size()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    square = batch * heads * tokens * tokens
    if mode == "kept":
        return (layers + 3) * square * size + weights
    if mode == "maps":
        mask = batch * tokens * tokens
        return (STREAMED_MAPS * square + mask + layers * batch * tokens * (8 * hidden + 4 * mlp)) * size + weights
    if mode == "layers":
        return (STREAMED_MAPS * square + 4 * layers * batch * tokens * hidden) * size + weights
    raise AttngradError(f"unknown streaming mode {mode!r}; choose from {', '.join(MODES)}")
def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: the driver's count; CPU: the system's MemAvailable), or ``None`` if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    env = os.environ.get("ATTNGRAD_MEMORY_LIMIT_GB")  # a cap the user sets (containers, shared machines)
    limit = int(float(env) * 2**30) if env else None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    return found if limit is None else min(found, limit)
    except OSError:
        pass
    return limit


def plan(model: torch.nn.Module, batch: int, tokens: int, device: torch.device, *,
         streaming: bool | str | None = None, can_stream: bool = True) -> str:
    """How the pass should run (one of :data:`MODES`), refused in one line before any work when it cannot fit
    in 90 % of the free memory.

    ``streaming=None`` chooses the first mode that fits: ``kept``, ``maps``, ``layers``. ``True``: ``maps``, or
    ``layers`` when even that does not fit; ``False``: ``kept``; a mode's name forces it (checked all the same).
    ``can_stream=False``: methods that need every layer at once (relevance propagation) run ``kept`` only.
    """
    free = available_bytes(device)

    def fits(mode: str) -> bool:
        return free is None or needed_bytes(model, batch, tokens, mode=mode) <= 0.9 * free

    choices: tuple[str, ...]
    if streaming is None:
        choices = MODES if can_stream else MODES[:1]
    elif isinstance(streaming, bool):
        choices = MODES[1:] if streaming else MODES[:1]
    elif streaming in MODES:
        choices = (streaming,)
    else:
        raise AttngradError(f"unknown streaming mode {streaming!r}; choose from {', '.join(MODES)}")
    if not can_stream and choices != MODES[:1]:
        raise AttngradError("relevance propagation (attnlrp, tattr) needs every layer at once and cannot stream; "
                            "explain it without streaming, or choose an attention method")
    mode = next((m for m in choices if fits(m)), choices[-1])
    if free is not None and not fits(mode):
        need = needed_bytes(model, batch, tokens, mode=mode)
        how = {"kept": "(every layer's attention maps are kept for the backward pass)",
               "maps": "with each layer's maps recomputed in the backward pass",
               "layers": "even one layer at a time"}[mode]
        raise AttngradError(
            f"explaining {batch} prompt(s) of {tokens} tokens needs about {need / 2**30:.1f} GB {how} and "
            f"{free / 2**30:.1f} GB is free on {device}; shorten the prompt or use a smaller --batch-size"
            + ("" if can_stream else " (relevance propagation cannot stream; an attention method such as complete can)")
        )
    return mode
