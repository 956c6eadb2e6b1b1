"""How much memory explaining a batch of prompts needs, and a refusal before a run that cannot fit.

By default an explanation keeps every layer's attention probabilities (B, H, N, N) for the
backward pass (the gradients of the maps are folded into the read row as they arrive and
released, see :mod:`attngrad.lm.attribution`), and one layer's scores, probabilities and
gradients exist at once beside them: ``(L + 3) · B · H · N² · bytes`` plus the weights. On
SmolLM2-135M (30 layers, 9 heads, float32) that is 17 GB at 4,000 tokens, which is where a run
under an 18 GB limit ran out of memory. Streaming recomputes each layer in the backward pass
and holds one layer's maps at a time; :func:`plan` switches to it when the kept maps would not
fit, and refuses in one line when neither fits.
"""

from __future__ import annotations

import os

import torch

from ..errors import AttngradError

#: N x N tensors (B, H, N, N) of one layer alive at once when each layer is recomputed in the backward
#: pass: SmolLM2 at 8,192 tokens peaked at 9.7 GB above the loaded model, about 4 of them (docs/lm.md).
STREAMED_MAPS = 4


def needed_bytes(model: torch.nn.Module, batch: int, tokens: int, *, streaming: bool = False) -> int:
    """Estimated peak bytes of one explanation pass over ``batch`` prompts of ``tokens`` tokens.

    Kept (the default): every layer's maps, ``(L + 3) · B · H · N²`` values, plus the weights.
    ``streaming`` (each layer recomputed in the backward pass, :func:`attngrad.lm.attribution.run`):
    one layer's worth, ``STREAMED_MAPS · B · H · N²``, plus each layer's saved input ``L · B · N · D``.
    """
    config = getattr(model, "config", None)
    layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1)
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1)
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1)
    size = next(model.parameters()).element_size()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if streaming:
        return (STREAMED_MAPS * batch * heads * tokens * tokens + 4 * layers * batch * tokens * hidden) * size + weights
    return (layers + 3) * batch * heads * tokens * tokens * size + weights


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
         streaming: bool | None = None, can_stream: bool = True) -> bool:
    """Whether the pass should stream (recompute each layer in the backward pass), refused in one line
    before any work when it cannot fit in 90 % of the free memory either way.

    ``streaming=None`` chooses: keep every layer's maps when they fit (faster), else stream.
    ``True`` / ``False`` force a mode (checked all the same). ``can_stream=False``: methods that need
    every layer at once (relevance propagation) cannot stream.
    """
    free = available_bytes(device)
    kept = needed_bytes(model, batch, tokens)
    streamed = needed_bytes(model, batch, tokens, streaming=True)
    def fits(need: int) -> bool:
        return free is None or need <= 0.9 * free

    if streaming is None:
        streaming = can_stream and not fits(kept)
    if streaming and not can_stream:
        raise AttngradError("relevance propagation (attnlrp, tattr) needs every layer at once and cannot stream; "
                            "explain it without streaming, or choose an attention method")
    need = streamed if streaming else kept
    if free is not None and not fits(need):
        how = ("even one layer at a time" if streaming else
               "(every layer's attention maps are kept for the backward pass)")
        raise AttngradError(
            f"explaining {batch} prompt(s) of {tokens} tokens needs about {need / 2**30:.1f} GB {how} and "
            f"{free / 2**30:.1f} GB is free on {device}; shorten the prompt or use a smaller --batch-size"
        )
    return streaming
