"""Paired differences (mean ± 95 % interval over the same prompts) between evidence-test runs.

Each argument is ``RUN:METHOD`` (an ``attngrad evaluate lm-evidence`` folder and one of its methods);
the runs must hold the same prompts (same ``--prompts``, ``--candidates``, ``--seed``). Every later
argument is compared with the first, per metric (evidence share, top-1, top-k):

    python docs/results/lm_evidence_paired.py runs/ev-diff:attnlrp runs/ev-logit:attnlrp runs/ev-logit:tattr
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

METRICS = ("evidence_share", "top1", "topk")


def load(spec: str) -> tuple[dict[str, np.ndarray], list]:
    run, method = spec.rsplit(":", 1)
    with np.load(Path(run) / "per_prompt.npz") as f:
        values = {m: f[f"{method}/{m}"] for m in METRICS}
    return values, json.loads((Path(run) / "prompts.json").read_text())["prompts"]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    first, prompts = load(argv[0])
    for spec in argv[1:]:
        other, theirs = load(spec)
        if theirs != prompts:
            print(f"{spec}: not the same prompts as {argv[0]}", file=sys.stderr)
            return 2
        cells = []
        for m in METRICS:
            d = first[m] - other[m]
            d = d[~np.isnan(d)]
            cells.append(f"{m} {d.mean():+.3f} ± {1.96 * d.std(ddof=1) / np.sqrt(len(d)):.3f}")
        print(f"{argv[0]} − {spec} ({len(d)} prompts): " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
