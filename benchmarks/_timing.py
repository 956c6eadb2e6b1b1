"""Timing shared by the benchmark scripts: explanation time against a plain forward+backward."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratio(base: Callable[[], object], explain: Callable[[], object], repeats: int, warmup: int = 2) -> dict:
    """Median seconds of ``base`` (forward+backward) and ``explain`` over interleaved repeats, after
    ``warmup`` untimed calls of each, and their ratio."""
    for _ in range(warmup):
        base(), explain()
    b, e = [], []
    for _ in range(repeats):
        b.append(timed(base))
        e.append(timed(explain))
    fb, ex = statistics.median(b), statistics.median(e)
    return {"forward_backward_s": fb, "explanation_s": ex, "ratio": ex / fb}
