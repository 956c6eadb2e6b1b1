"""Output writers of a perturbation run's summary (one job: CSV, Markdown and the curves' plot)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .perturbation import DIRECTIONS, INSERTION_DIRECTIONS, INSERTION_PERCENTS, PERCENTS
from .storage import _atomic_write

#: Resolution of the saved plots (as :func:`attngrad.viz.save_figure`).
DPI = 110


def save_png(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG through :func:`~.storage._atomic_write`, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def write_csv(path: Path, summary: dict[str, Any]) -> None:
    """One row per method, direction and measure (top-1 accuracy or class probability): its AUC and
    curve at 0 %, ..., 100 % of the pixels removed (insertion: inserted); the perturbation test
    stops at 90 %, so its last cell is empty."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["method", "direction", "measure", "auc", "higher_is_better", "images",
                     *(f"at_{p}" for p in INSERTION_PERCENTS)])  # fmt: skip
    for name, entry in summary["methods"].items():
        rows = []
        for direction in DIRECTIONS:
            d = entry[direction]
            rows += [(direction, "top-1", d["auc"], d["higher_is_better"], d["curve"] + [None]),
                     (direction, "probability", d["probability_auc"], d["higher_is_better"],
                      d["probability_curve"] + [None])]  # fmt: skip
        rows += [(k, "probability", entry[k]["auc"], entry[k]["higher_is_better"], entry[k]["curve"])
                 for k in INSERTION_DIRECTIONS if k in entry]  # fmt: skip
        for direction, measure, area, higher, curve in rows:
            cells = ["" if v is None else f"{v:.6f}" for v in curve]
            writer.writerow([name, direction, measure, f"{area:.4f}", higher, entry["images"], *cells])
    _atomic_write(path, text.getvalue())


def markdown_table(summary: dict[str, Any]) -> str:
    """The AUCs as a Markdown table: positive / negative perturbation of top-1 accuracy, and (when
    measured) insertion / deletion of the class probability; each header says which way is better."""
    extra = all(d in entry for entry in summary["methods"].values() for d in INSERTION_DIRECTIONS)
    lines = [
        ("" if summary["complete"] else "(partial run) ")
        + f"Perturbation test, {summary['images']} images, explained class: {summary['explained_class']}, "
        f"top-1 accuracy at 0 %: {100 * summary['accuracy_at_0']:.1f} %"
        + _guide_words(summary["settings"]),
        "",
        "| method | positive AUC, top-1 (lower is better) | negative AUC, top-1 (higher is better) |"
        + (" insertion AUC, probability (higher is better) | deletion AUC, probability (lower is better) |"
           if extra else ""),
        "|---|---:|---:|" + ("---:|---:|" if extra else ""),
    ]
    for name, entry in summary["methods"].items():
        cells = [entry[d]["auc"] for d in DIRECTIONS + (INSERTION_DIRECTIONS if extra else ())]
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    return "\n".join(lines) + "\n"


def _guide_words(settings: dict[str, Any]) -> str:
    """``, guide: zebra.jpg (...)`` naming the guided protocol, or nothing for an unguided run."""
    if not settings.get("guide"):
        return ""
    region = settings.get("guide_region") or "original"  # runs stored before the paper's protocol cropped
    how = {
        "whole": "the paper's protocol: the stitched image is explained, ranked and perturbed",
        "original": "cropped: the map cut to the original, the original alone perturbed",
    }[region]
    return f", guide: {Path(settings['guide']).name} ({how})"


def plot_curves(summary: dict[str, Any], path: str | Path) -> Path:
    """One panel per direction, one line per method: top-1 accuracy (insertion / deletion: class
    probability) against the fraction of pixels removed or inserted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = summary["methods"].values()
    directions = DIRECTIONS + tuple(d for d in INSERTION_DIRECTIONS if all(d in e for e in entries))
    fig, axes = plt.subplots(1, len(directions), figsize=(5 * len(directions), 4))
    for ax, direction in zip(axes, directions):
        for name, entry in summary["methods"].items():
            d = entry[direction]
            x = PERCENTS if direction in DIRECTIONS else INSERTION_PERCENTS
            ax.plot(x, d["curve"], marker="o", ms=3, label=f"{name} ({d['auc']:.1f})")
        better = "higher" if d["higher_is_better"] else "lower"
        title = f"{direction} perturbation" if direction in DIRECTIONS else direction
        ax.set_title(f"{title} ({better} AUC is better)")
        ax.set_xlabel("% of pixels inserted" if direction == "insertion" else "% of pixels removed")
        ax.set_ylabel("top-1 accuracy" if direction in DIRECTIONS else "class probability")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_png(fig, path)
