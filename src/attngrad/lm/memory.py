"""How much memory explaining a batch of prompts needs, and a refusal before a run that cannot fit.

An explanation keeps every layer's attention probabilities (B, H, N, N) for the backward pass
(the gradients of the maps are folded into the read row as they arrive and released, see
:mod:`attngrad.lm.attribution`), and one layer's scores, probabilities and gradients exist at
once beside them. So the estimate is ``(L + 3) · B · H · N² · bytes`` plus the weights. On
SmolLM2-135M (30 layers, 9 heads, float32) that is 17 GB at 4,000 tokens, which is where a run
under an 18 GB limit ran out of memory.
"""

from __future__ import annotations

import os

import torch

from ..errors import AttngradError


def needed_bytes(model: torch.nn.Module, batch: int, tokens: int) -> int:
    """Estimated peak bytes of one explanation pass over ``batch`` prompts of ``tokens`` tokens."""
    config = getattr(model, "config", None)
    layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1)
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1)
    size = next(model.parameters()).element_size()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
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


def check_fits(model: torch.nn.Module, batch: int, tokens: int, device: torch.device) -> None:
    """Refuse, in one line and before any work, a pass whose estimate exceeds 90 % of the free memory."""
    need = needed_bytes(model, batch, tokens)
    free = available_bytes(device)
    if free is not None and need > 0.9 * free:
        raise AttngradError(
            f"explaining {batch} prompt(s) of {tokens} tokens needs about {need / 2**30:.1f} GB (every layer's "
            f"attention maps are kept for the backward pass) and {free / 2**30:.1f} GB is free on {device}; "
            "shorten the prompt or use a smaller --batch-size"
        )
