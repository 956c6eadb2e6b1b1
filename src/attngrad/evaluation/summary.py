"""Curves, AUCs and paired comparisons from a results folder (one job: summarising; no model needed)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AttngradError
from .perturbation import (
    DIRECTIONS,
    INSERTION_DIRECTIONS,
    INSERTION_PERCENTS,
    PERCENTS,
    InsertionDeletion,
    PerturbationTest,
    auc,
)
from .storage import PER_IMAGE, RUN_FILE, _atomic_write, load_results
from .writers import markdown_table, plot_curves, write_csv

#: Older name of :func:`attngrad.evaluation.storage.load_results`.
load_shards = load_results


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for pkg in ("attngrad", "torch", "transformers", "timm", "numpy"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


def per_image_curves(raw: dict[str, np.ndarray], name: str, direction: str, measure: str = "top-1") -> np.ndarray:
    """(images, points) curve of every image for one method and direction, from the raw results.

    Positive / negative perturbation: top-1 hits (``measure="top-1"``) or the class probability
    (``"probability"``) at 0 %, ..., 90 %. Insertion / deletion: the class probability at
    0 %, ..., 100 %; their ends are the blurred image, the image itself and the black image, and
    deletion's inner points are positive perturbation's (the same pixels set to 0).
    """
    if measure not in ("top-1", "probability"):
        raise AttngradError(f"unknown measure {measure!r}; use top-1 or probability")
    if direction in DIRECTIONS:
        if measure == "top-1":
            first, inner = (raw["pred0"] == raw["target"]).astype(np.float64), raw[f"{name}.{direction}.correct"]
        else:
            first, inner = raw["prob0"], raw[f"{name}.{direction}.prob"]
        return np.concatenate([first[:, None], inner], axis=1).astype(np.float64)
    start, middle, end = {
        "insertion": ("prob_blur", f"{name}.insertion.prob", "prob0"),
        "deletion": ("prob0", f"{name}.positive.prob", "prob_black"),
    }[direction]
    return np.concatenate([raw[start][:, None], raw[middle], raw[end][:, None]], axis=1).astype(np.float64)


def summarize(out: str | Path) -> dict[str, Any]:
    """Curves and AUCs from the per-image raw results (shards, or ``per_image.npz``); writes
    results.json/.csv/.md, curves.png and per_image.npz."""
    out = Path(out)
    if not (out / RUN_FILE).is_file():
        raise AttngradError(f"{out}: no {RUN_FILE}; not a results folder")
    settings = json.loads((out / RUN_FILE).read_text())
    raw = load_results(out)
    if "index" not in raw or len(raw["index"]) == 0:
        raise AttngradError(f"{out}: no image could be evaluated (all unreadable?)")
    n = len(raw["index"])
    methods: dict[str, Any] = {}
    for name in settings["methods"]:
        entry: dict[str, Any] = {"images": n}
        for direction in DIRECTIONS:
            correct = per_image_curves(raw, name, direction).mean(axis=0)
            prob = per_image_curves(raw, name, direction, "probability").mean(axis=0)
            entry[direction] = {
                "auc": auc(correct),
                "curve": correct.tolist(),
                "probability_auc": auc(prob),
                "probability_curve": prob.tolist(),
                "higher_is_better": PerturbationTest(direction).higher_is_better,
            }
        for direction in INSERTION_DIRECTIONS if settings.get("insertion_deletion") else ():
            curve = per_image_curves(raw, name, direction).mean(axis=0)
            entry[direction] = {
                "auc": auc(curve),
                "curve": curve.tolist(),
                "percent": list(INSERTION_PERCENTS),
                "measure": "class probability",
                "higher_is_better": InsertionDeletion(direction).higher_is_better,
            }
        methods[name] = entry
    summary = {
        "methods": methods,
        "percent_removed": list(PERCENTS),
        "images": n,
        "complete": n + len(raw["failed_index"]) == settings["num_samples"],
        "accuracy_at_0": float((raw["pred0"] == raw["label"]).mean()),
        "explained_class": settings["explain"],
        "skipped": {
            "unreadable": [str(m) for m in raw["failed_message"]],
            "unknown_label": [f"{p}: {why}" for p, why in settings.get("skipped_unknown", [])],
            "guide_class": len(settings.get("skipped_guide_class", [])),
        },
        "settings": {k: v for k, v in settings.items() if not k.startswith("skipped")},
        "versions": _versions(),
    }
    _atomic_write(out / "results.json", json.dumps(summary, indent=2))
    _atomic_write(out / PER_IMAGE, lambda f: np.savez_compressed(f, **raw))  # type: ignore[arg-type]  # numpy's stubs: a ** key could be allow_pickle
    write_csv(out / "results.csv", summary)
    _atomic_write(out / "results.md", markdown_table(summary))
    plot_curves(summary, out / "curves.png")
    return summary


def compare_methods(out: str | Path, a: str, b: str) -> dict[str, dict[str, float]]:
    """Paired per-image comparison of two methods from a results folder (no model needed).

    Per direction (insertion / deletion too when measured): both mean AUCs (each image's own
    curve's area; their mean is the data set's AUC), the mean difference ``a - b`` and the
    half-width of its normal 95 % interval.
    """
    raw = load_results(out)
    missing = [m for m in (a, b) if f"{m}.positive.correct" not in raw]
    if missing:
        known = sorted({k.split(".")[0] for k in raw if k.endswith(".correct")})
        raise AttngradError(f"no results for {', '.join(missing)} in {out}; it has {', '.join(known)}")
    directions = DIRECTIONS + (INSERTION_DIRECTIONS if f"{a}.insertion.prob" in raw else ())
    found = {}
    for direction in directions:
        areas = [np.asarray(auc(per_image_curves(raw, m, direction))) for m in (a, b)]  # (images,): one area each
        diff = areas[0] - areas[1]
        found[direction] = {
            a: float(areas[0].mean()), b: float(areas[1].mean()), "difference": float(diff.mean()),
            "ci95": float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff))), "images": len(diff),
        }  # fmt: skip
    return found
