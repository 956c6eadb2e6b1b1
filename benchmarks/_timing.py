"""Timing shared by the benchmark scripts: explanation time against a plain forward+backward."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


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
