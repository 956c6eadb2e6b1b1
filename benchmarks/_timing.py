"""Timing shared by the benchmark scripts: explanation time against a plain forward+backward."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

from attngrad.evaluation.storage import json_safe


def timed(fn: Callable[[], object], device: torch.device | str | None = None) -> float:
    """Seconds one call of ``fn`` takes; on a CUDA ``device`` measured with CUDA events (the kernels'
    time, queued work included), elsewhere with the wall clock."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def peak_bytes(fn: Callable[[], object], device: torch.device | str) -> int | None:
    """Peak CUDA memory one call of ``fn`` allocates above what was allocated before it (``None`` off CUDA)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def ratio(base: Callable[[], object], explain: Callable[[], object], repeats: int, warmup: int = 2,
          device: torch.device | str | None = None) -> dict:
    """Median seconds of ``base`` (forward+backward) and ``explain`` over interleaved repeats, after
    ``warmup`` untimed calls of each, and their ratio (CUDA: event timing and each one's peak memory)."""
    for _ in range(warmup):
        base(), explain()
    b, e = [], []
    for _ in range(repeats):
        b.append(timed(base, device))
        e.append(timed(explain, device))
    fb, ex = statistics.median(b), statistics.median(e)
    out = {"forward_backward_s": fb, "explanation_s": ex, "ratio": ex / fb}
    if device is not None and torch.device(device).type == "cuda":
        out["forward_backward_peak_mb"] = (peak_bytes(base, device) or 0) / 2**20
        out["explanation_peak_mb"] = (peak_bytes(explain, device) or 0) / 2**20
    return out


def _shape(t: object) -> object:
    return t.shape if isinstance(t, torch.Tensor) else t


class _MatmulFlops(TorchDispatchMode):
    """Adds up the floating-point operations of every matrix product and convolution dispatched inside
    (PyTorch's own per-operator formulas, :data:`torch.utils.flop_counter.flop_registry`; elementwise work
    is not counted). Unlike ``FlopCounterMode`` it tracks no modules, so ``torch.autograd.grad`` works inside."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*tree_map(_shape, args), **tree_map(_shape, kwargs), out_val=tree_map(_shape, out))
        return out


def matmul_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of the matrix products and convolutions of one call of ``fn``."""
    with _MatmulFlops() as counter:
        fn()
    return counter.total


def write_json(path: str | Path, record: object) -> None:
    """Write a benchmark's measurements to ``path`` (parent folders made; strict JSON: NaN -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n")
