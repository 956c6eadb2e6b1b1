"""Running the perturbation test over a data set: batched, resumable, distributed.

- **Batches.** The labelled images, in sorted order, are cut into fixed batches of
  ``batch_size``. Per batch: one forward + one backward pass explains every method
  (:meth:`Explainer.explain_methods`); that pass's logits are the unperturbed (0 %)
  prediction shared by all methods; each method's map serves both directions; the
  perturbed inputs go through the model in chunks of ``eval_batch_size``. With
  ``insertion_deletion`` the insertion curve is measured too (deletion's inner points are
  the positive perturbation's probabilities, so only its 100 % end, the black image, is new).
- **Resumable.** Each finished batch is written at once, atomically, as
  ``shards/batch-NNNNNN.npz`` (per-image raw results). ``resume=True`` skips the batches
  already written, so a stopped run loses at most the batches in flight; since batches
  are fixed, the final numbers equal an uninterrupted run's exactly.
- **Distributed.** Under ``torchrun`` (``WORLD_SIZE`` > 1), batch ``j`` goes to rank
  ``j % world_size`` (gloo on CPU, nccl on GPU); every batch has the same images as in a
  single-process run, each rank writes its own shard files, and rank 0 merges them.
- **Results.** :func:`summarize` turns the shards into ``results.json``, ``results.csv``,
  ``results.md``, ``curves.png`` and ``per_image.npz``; it can be re-run on a results
  folder without the model.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import AttngradError
from ..explainer import Explainer
from ..io import load_image
from ..methods import get_method
from .data import Batch, DataSet, ImageDataset, LabelResolver, Sample, collate
from .perturbation import (
    DIRECTIONS,
    INSERTION_DIRECTIONS,
    INSERTION_PERCENTS,
    PERCENTS,
    InsertionDeletion,
    PerturbationTest,
    auc,
    blur,
    class_probability,
)

SHARDS = "shards"
RUN_FILE = "run.json"
#: Settings that must match for ``--resume`` to continue a run.
RESUME_KEYS = (
    "data", "methods", "explain", "guide", "limit", "batch_size", "eval_batch_size", "model", "table",
    "image_labels", "insertion_deletion",
)  # fmt: skip


@dataclass
class Settings:
    """What a run computes; stored in ``run.json`` and in ``results.json``."""

    data: str
    methods: list[str]
    explain: str = "label"
    guide: str | None = None
    limit: int | None = None
    batch_size: int = 16
    eval_batch_size: int = 64
    model: str = ""
    table: str | None = None
    image_labels: str | None = None
    insertion_deletion: bool = False
    device: str = "cpu"
    world_size: int = 1
    num_samples: int = 0
    samples_digest: str = ""
    labels_digest: str = ""
    protocol: str = (
        "Chefer et al. 2021: rank pixels by the bilinearly upsampled map; set floor(f*H*W) pixels to 0 in [0,1] "
        "space for f = 0.1..0.9; top-1 == explained class; AUC = np.trapezoid(curve, dx=0.1) * 100"
    )
    skipped_unknown: list[tuple[str, str]] = field(default_factory=list)
    skipped_guide_class: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- distribution


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``: from the initialised process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: str | None) -> str | None:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1; return this rank's device.

    gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK`` when no index is given).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return device
    cuda = device is not None and device.startswith("cuda")
    if cuda and ":" not in device:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=24))
    return device


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a no-op in a single process)."""
    if dist_info()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if dist_info()[1] > 1:
        torch.distributed.barrier()


# ----------------------------------------------------------------------------- guide


def load_guide(guide: str | Path, resolver: LabelResolver, explainer: Explainer) -> tuple[Image.Image, int]:
    """The guide image and its class (from its ``<wnid>_<name>`` file name, else the model's top-1)."""
    image = load_image(guide)  # raises AttngradError with a clear message for a bad path
    try:
        return image, resolver.resolve(Path(guide).stem)
    except AttngradError:
        return image, explainer.predict(image, k=1)[0][0].index


def _guidance() -> tuple[Any, Any]:
    try:
        from ..experiments.guidance import crop_region, stitch
    except ImportError as err:
        raise AttngradError(f"--guide needs attngrad.experiments.guidance, which cannot be imported ({err})") from None
    return stitch, crop_region


# ----------------------------------------------------------------------------- one batch


def _forward(explainer: Explainer):
    adapter = explainer.adapter

    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return adapter.forward(pixel_values).logits

    return forward


def evaluate_batch(
    explainer: Explainer,
    batch: Batch,
    methods: Sequence[str],
    explain: str = "label",
    eval_batch_size: int = 64,
    crop_region: Any = None,
    insertion_deletion: bool = False,
) -> dict[str, np.ndarray]:
    """Per-image raw results of one batch: the unperturbed prediction, and per method and
    direction, top-1 hits and the class probability at 10 %, ..., 90 % removed (with
    ``insertion_deletion``: also the insertion steps and the black and blurred images)."""
    device = explainer.device
    pre = explainer.adapter.preprocessor
    forward = _forward(explainer)
    unit = batch.unit.to(device)
    labels = batch.labels.to(device)
    if batch.guided is None:
        results = explainer.explain_methods(pre.normalize(unit), methods, target=labels if explain == "label" else None)
        first = next(iter(results.values()))
        logits0, targets = first.logits, first.targets
        maps = {name: r.maps for name, r in results.items()}
    else:
        # Explain the class on the stitched image, crop the map to the original's region,
        # and perturb the original image (method.md, experiment 3 and the perturbation test).
        logits0 = forward(pre.normalize(unit))
        targets = labels if explain == "label" else logits0.argmax(dim=-1)
        results = explainer.explain_methods(pre.normalize(batch.guided.to(device)), methods, target=targets)
        size = tuple(unit.shape[-2:])
        maps = {
            name: torch.cat(
                [
                    F.interpolate(crop_region(r.maps[i : i + 1], region)[:, None].float(), size=size, mode="bilinear")[:, 0]
                    for i, region in enumerate(batch.regions)
                ]
            )
            for name, r in results.items()
        }
    logits0 = logits0.detach().float()
    out: dict[str, np.ndarray] = {
        "index": np.asarray(batch.indices, dtype=np.int64),
        "label": batch.labels.numpy().astype(np.int64),
        "target": targets.cpu().numpy().astype(np.int64),
        "pred0": logits0.argmax(dim=-1).cpu().numpy().astype(np.int64),
        "prob0": class_probability(logits0, targets).cpu().numpy().astype(np.float32),
    }
    blurred = blur(unit) if insertion_deletion else None
    for name in methods:
        for direction in DIRECTIONS:
            res = PerturbationTest(direction, eval_batch_size)(forward, unit, maps[name], targets, pre.normalize)
            out[f"{name}.{direction}.correct"] = res.correct.numpy()
            out[f"{name}.{direction}.prob"] = res.probability.numpy().astype(np.float32)
        if insertion_deletion:
            test = InsertionDeletion("insertion", eval_batch_size, blurred=blurred)
            res = test(forward, unit, maps[name], targets, pre.normalize)
            out[f"{name}.insertion.prob"] = res.probability.numpy().astype(np.float32)
    if insertion_deletion:
        for key, image in (("prob_black", torch.zeros_like(unit)), ("prob_blur", blurred)):
            out[key] = class_probability(forward(pre.normalize(image)), targets).cpu().numpy().astype(np.float32)
    return out


# ----------------------------------------------------------------------------- shards


def _shard_path(out: Path, j: int) -> Path:
    return out / SHARDS / f"batch-{j:06d}.npz"


def _write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a partial file is renamed only once complete and flushed to disk."""
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def samples_digest(paths: Sequence[str]) -> str:
    """SHA-256 of the ordered image paths: identifies which images a run's batches hold."""
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()


def labels_digest(samples: Sequence[Sample]) -> str:
    """SHA-256 of the ordered ``path<TAB>label`` pairs: the images and the classes they are tested on."""
    return samples_digest([f"{s.path}\t{s.label}" for s in samples])


def _prepare_folder(out: Path, settings: Settings, resume: bool, samples: Sequence[Sample]) -> None:
    """Create ``out`` and ``run.json``; on resume, check the settings and the images (paths and
    labels) match the stored run (rank 0 only).

    On resume the limit may grow when the stored images are the first of the new ones: whole
    batches stay valid; a last, partly filled batch is deleted and redone.
    """
    run_file = out / RUN_FILE
    if not run_file.exists():
        (out / SHARDS).mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(asdict(settings), indent=2))
        return
    stored = json.loads(run_file.read_text())
    if not resume:
        raise AttngradError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    defaults = asdict(Settings(data="", methods=[]))  # keys that older runs did not store
    diff = [k for k in RESUME_KEYS if stored.get(k, defaults[k]) != json.loads(json.dumps(getattr(settings, k)))]
    n = stored.get("num_samples", 0)

    def stored_first(count: int) -> bool:  # are the stored images (and labels, when stored) the first ones now?
        head = samples[:count]
        return samples_digest([s.path for s in head]) == stored.get("samples_digest") and (
            not stored.get("labels_digest") or labels_digest(head) == stored["labels_digest"]
        )

    if diff == ["limit"] and 0 < n <= len(samples) and stored_first(n):
        if n % settings.batch_size and n < len(samples):
            _shard_path(out, n // settings.batch_size).unlink(missing_ok=True)
        run_file.write_text(json.dumps(asdict(settings), indent=2))
    elif diff:
        raise AttngradError(
            f"cannot resume {out}: settings differ ({', '.join(diff)}); use the run's settings or another --out"
            + (" (--limit can only grow, keeping the stored images first)" if diff == ["limit"] else "")
        )
    elif n != len(samples) or not stored_first(n):
        raise AttngradError(
            f"cannot resume {out}: the images or their labels differ from the stored run's (files added, removed "
            "or relabelled?); restore them or choose another --out"
        )


# ----------------------------------------------------------------------------- the run


def run_perturbation(
    explainer: Explainer,
    dataset: DataSet,
    methods: Sequence[str],
    out: str | Path,
    explain: str = "label",
    guide: str | Path | None = None,
    batch_size: int = 16,
    eval_batch_size: int = 64,
    workers: int = 2,
    resume: bool = False,
    limit: int | None = None,
    data: str = "",
    model: str = "",
    progress: bool = True,
    max_batches: int | None = None,
    insertion_deletion: bool = False,
) -> dict[str, Any] | None:
    """Run the perturbation test of ``methods`` on ``dataset`` into ``out``; return the summary (rank 0).

    Args:
        explain: ``"label"`` (the data set's class) or ``"predicted"`` (the model's top-1).
        guide: a guide image stitched to every image (images of its class are skipped).
        batch_size: images per explanation pass (the unit of resumption and distribution).
        eval_batch_size: perturbed images per forward pass.
        workers: DataLoader worker processes decoding images.
        max_batches: stop after this many batches of this rank (for tests and benchmarks).
        insertion_deletion: measure the insertion / deletion curves too (Petsiuk et al. 2018).
    """
    if explain not in ("label", "predicted"):
        raise AttngradError(f"--explain must be label or predicted, not {explain!r}")
    if not methods:
        raise AttngradError("no methods given; e.g. --methods gae,complete,random")
    for name in methods:
        get_method(name)  # unknown names fail here, before any work
    out = Path(out)
    rank, world = dist_info()
    samples = dataset.samples
    guide_image, stitch, crop_region, skipped_guide = None, None, None, []
    if guide is not None:
        guide_image, guide_class = load_guide(guide, LabelResolver(explainer.labels, dataset.table), explainer)
        stitch, crop_region = _guidance()
        skipped_guide = [s.path for s in samples if s.label == guide_class]
        samples = [s for s in samples if s.label != guide_class]
    if not samples:
        raise AttngradError("no labelled images left to evaluate (see the skipped files above)")
    settings = Settings(
        data=data, methods=list(methods), explain=explain, guide=str(guide) if guide else None, limit=limit,
        batch_size=batch_size, eval_batch_size=eval_batch_size, model=model, table=dataset.table,
        image_labels=dataset.image_labels, insertion_deletion=insertion_deletion,
        device=str(explainer.device), world_size=world, skipped_unknown=dataset.skipped,
        skipped_guide_class=skipped_guide, num_samples=len(samples),
        samples_digest=samples_digest([s.path for s in samples]), labels_digest=labels_digest(samples),
    )  # fmt: skip
    if insertion_deletion:
        settings.protocol += (
            "; insertion / deletion (Petsiuk et al. 2018): class probability at 0..100 % with the highest-scored "
            "pixels pasted into the blurred image (Gaussian 11 x 11, sigma 5, reflected borders) or set to 0"
        )
    error = None
    if rank == 0:
        try:
            _prepare_folder(out, settings, resume, samples)
        except AttngradError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - told to every rank, so none waits for rank 0 forever
            error = f"cannot prepare {out}: {err}"
    error = _from_rank0(error)
    if error:
        raise AttngradError(error)

    batches = [list(range(i, min(i + batch_size, len(samples)))) for i in range(0, len(samples), batch_size)]
    todo = [j for j in range(rank, len(batches), world) if not _shard_path(out, j).exists()]
    if max_batches is not None:
        todo = todo[:max_batches]
    mine = sum(len(batches[j]) for j in range(rank, len(batches), world))
    loader = DataLoader(
        ImageDataset(samples, explainer.adapter.preprocessor, guide_image, stitch),
        batch_sampler=[batches[j] for j in todo],
        num_workers=workers,
        collate_fn=collate,
        pin_memory=explainer.device.type == "cuda",
    )
    bar = tqdm(
        total=mine, initial=mine - sum(len(batches[j]) for j in todo), unit="img", desc="perturbation",
        disable=not progress or rank != 0, dynamic_ncols=True,
    )  # fmt: skip
    for j, batch in zip(todo, loader):
        for index, message in batch.failed:
            tqdm.write(f"attngrad: skipped: {message}", file=sys.stderr)
        arrays = {
            "failed_index": np.asarray([i for i, _ in batch.failed], dtype=np.int64),
            "failed_message": np.asarray([m for _, m in batch.failed], dtype=str),
        }
        if batch.indices:
            arrays["path"] = np.asarray([samples[i].path for i in batch.indices], dtype=str)
            arrays.update(
                evaluate_batch(explainer, batch, methods, explain, eval_batch_size, crop_region, insertion_deletion)
            )
        _write_shard(_shard_path(out, j), arrays)
        bar.update(len(batches[j]))
    bar.close()
    _barrier()
    if rank != 0 or (max_batches is not None and any(not _shard_path(out, j).exists() for j in range(len(batches)))):
        return None
    return summarize(out)


# ----------------------------------------------------------------------------- merging and reporting


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for pkg in ("attngrad", "torch", "transformers", "timm", "numpy"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


def load_shards(out: str | Path) -> dict[str, np.ndarray]:
    """Merge every batch shard of a results folder into per-image arrays, sorted by image index."""
    files = sorted((Path(out) / SHARDS).glob("batch-*.npz"))
    if not files:
        raise AttngradError(f"{out}: no result shards; run the evaluation first")
    parts = []
    for f in files:
        with np.load(f) as shard:
            parts.append(dict(shard))
    evaluated = [p for p in parts if "index" in p]
    keys = list(evaluated[0]) if evaluated else []
    merged = {k: np.concatenate([p[k] for p in evaluated]) for k in keys if not k.startswith("failed_")}
    merged["failed_index"] = np.concatenate([p["failed_index"] for p in parts])
    merged["failed_message"] = np.concatenate([p["failed_message"] for p in parts]).astype(str)
    if evaluated:
        order = np.argsort(merged["index"], kind="stable")
        merged.update({k: v[order] for k, v in merged.items() if not k.startswith("failed_")})
    return merged


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
    first, inner, last = {
        "insertion": ("prob_blur", f"{name}.insertion.prob", "prob0"),
        "deletion": ("prob0", f"{name}.positive.prob", "prob_black"),
    }[direction]
    return np.concatenate([raw[first][:, None], raw[inner], raw[last][:, None]], axis=1).astype(np.float64)


def summarize(out: str | Path) -> dict[str, Any]:
    """Curves and AUCs from the per-image raw results; writes results.json/.csv/.md, curves.png, per_image.npz."""
    out = Path(out)
    settings = json.loads((out / RUN_FILE).read_text())
    raw = load_shards(out)
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
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    np.savez_compressed(out / "per_image.npz", **{k: v for k, v in raw.items() if not k.startswith("failed_")})
    _write_csv(out / "results.csv", summary)
    (out / "results.md").write_text(markdown_table(summary))
    plot_curves(summary, out / "curves.png")
    return summary


def compare_methods(out: str | Path, a: str, b: str) -> dict[str, dict[str, float]]:
    """Paired per-image comparison of two methods from a results folder (no model needed).

    Per direction (insertion / deletion too when measured): both mean AUCs (each image's own
    curve's area; their mean is the data set's AUC), the mean difference ``a - b`` and the
    half-width of its normal 95 % interval.
    """
    raw = load_shards(out)
    missing = [m for m in (a, b) if f"{m}.positive.correct" not in raw]
    if missing:
        known = sorted({k.split(".")[0] for k in raw if k.endswith(".correct")})
        raise AttngradError(f"no results for {', '.join(missing)} in {out}; it has {', '.join(known)}")
    directions = DIRECTIONS + (INSERTION_DIRECTIONS if f"{a}.insertion.prob" in raw else ())
    found = {}
    for direction in directions:
        areas = [auc(per_image_curves(raw, m, direction)) for m in (a, b)]
        diff = areas[0] - areas[1]
        found[direction] = {
            a: float(areas[0].mean()), b: float(areas[1].mean()), "difference": float(diff.mean()),
            "ci95": float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff))), "images": len(diff),
        }  # fmt: skip
    return found


def _write_csv(path: Path, summary: dict[str, Any]) -> None:
    """One row per method, direction and measure (top-1 accuracy or class probability): its AUC and
    curve at 0 %, ..., 100 % of the pixels removed (insertion: inserted); the perturbation test
    stops at 90 %, so its last cell is empty."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
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


def markdown_table(summary: dict[str, Any]) -> str:
    """The AUCs as a Markdown table: positive / negative perturbation of top-1 accuracy, and (when
    measured) insertion / deletion of the class probability; each header says which way is better."""
    extra = all(d in entry for entry in summary["methods"].values() for d in INSERTION_DIRECTIONS)
    lines = [
        ("" if summary["complete"] else "(partial run) ")
        + f"Perturbation test, {summary['images']} images, explained class: {summary['explained_class']}, "
        f"top-1 accuracy at 0 %: {100 * summary['accuracy_at_0']:.1f} %"
        + (f", guide: {Path(summary['settings']['guide']).name}" if summary["settings"].get("guide") else ""),
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


def plot_curves(summary: dict[str, Any], path: str | Path) -> Path:
    """One panel per direction, one line per method: top-1 accuracy (insertion / deletion: class
    probability) against the fraction of pixels removed or inserted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import save_figure

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
    return save_figure(fig, path)
