"""Gap ± 95 % interval per method, per prompt kind, and paired differences, from lm-deletion shards.

The per-batch ``shards/`` are generated bulk (not committed): run ``attngrad evaluate lm-deletion``
first (docs/lm.md), then, from the repository root:

    python docs/results/lm_deletion_stats.py docs/results/lm-deletion/logit [more folders]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from attngrad.lm.deletion import auc


def load(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per method, each prompt's gap (least-first AUC - most-first AUC); and each prompt's kind."""
    gaps: dict[str, list[float]] = {}
    kinds: list[str] = []
    for shard in sorted((folder / "shards").glob("batch_*.json")):
        data = json.loads(shard.read_text())
        kinds += data["kinds"]
        for method, curves in data["curves"].items():
            gaps.setdefault(method, []).extend(auc(least) - auc(most) for most, least in zip(curves["most"], curves["least"]))
    return {m: np.array(g) for m, g in gaps.items()}, np.array(kinds)


def interval(values: np.ndarray) -> str:
    return f"{values.mean():+.2f} ± {1.96 * values.std(ddof=1) / np.sqrt(len(values)):.2f}"


def main() -> None:
    for folder in map(Path, sys.argv[1:]):
        gaps, kinds = load(folder)
        review = kinds == "review"
        print(f"\n{folder}: {len(kinds)} prompts ({(~review).sum()} factual, {review.sum()} reviews)")
        print("| method | gap | gap, factual | gap, reviews |\n|---|---|---|---|")
        for m, g in sorted(gaps.items(), key=lambda kv: -kv[1].mean()):
            print(f"| {m} | {interval(g)} | {interval(g[~review])} | {interval(g[review])} |")
        for a in ("gae", "complete"):
            for b in ("random", "grad_x_input", "raw_attention", "gae"):
                if a != b and a in gaps and b in gaps:
                    print(f"paired gap {a} - {b}: {interval(gaps[a] - gaps[b])}")


if __name__ == "__main__":
    main()
