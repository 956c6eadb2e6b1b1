"""Quality against cost: every method's AUCs on the same images, next to its speed.

Reads the two evaluation folders of ``quality-cost/`` (plain with insertion / deletion, and the
paper's guided protocol with the zebra) restricted to the images both contain, and the JSON of
``benchmarks/explain_speed.py --json``; prints the markdown table and writes it to
``quality-cost/table.md``. Run from the repository root:

    python docs/results/quality_cost.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attngrad.evaluation import auc, load_results, per_image_curves

HERE = Path(__file__).parent / "quality-cost"


def main() -> None:
    plain, guided = load_results(HERE / "plain"), load_results(HERE / "zebra-paper")
    common = set(plain["path"].tolist()) & set(guided["path"].tolist())

    def subset(raw):
        keep = np.array([p in common for p in raw["path"].tolist()])
        return {k: v[keep] for k, v in raw.items() if not k.startswith("failed_")}

    plain, guided = subset(plain), subset(guided)
    methods = json.loads((HERE / "plain" / "run.json").read_text())["methods"]
    speed = json.loads((HERE / "speed.json").read_text())
    batch = speed["batches"][max(speed["batches"], key=int)]
    lines = [
        f"{len(common)} images (every 20th of the ImageNet sample; the zebra guide itself left out), label explained; "
        f"speed: shipped ViT-Ti, batch {max(speed['batches'], key=int)}, {speed['threads']} CPU threads "
        f"(forward+backward {batch['fwd_bwd_ms']:.1f} ms per image).",
        "",
        "| method | positive ↓ | negative ↑ | guided positive ↓ | guided negative ↑ | insertion ↑ | deletion ↓ "
        "| ms / image | × fwd+bwd | model sequences / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        cells = [auc(per_image_curves(raw, m, d).mean(0)) for raw, d in
                 ((plain, "positive"), (plain, "negative"), (guided, "positive"), (guided, "negative"),
                  (plain, "insertion"), (plain, "deletion"))]
        t = batch["methods"].get(m)
        cost = [f"{t['ms']:.1f}", f"{t['ratio']:.2f}"] if t else ["", ""]
        seqs = speed["sequences"].get(m)
        lines.append(f"| {m} | " + " | ".join(f"{c:.2f}" for c in cells) + " | " + " | ".join(cost)
                     + f" | {'' if seqs is None else f'{seqs:g}'} |")
    table = "\n".join(lines) + "\n"
    (HERE / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
