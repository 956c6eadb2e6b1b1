"""``attngrad evaluate grid``: the grid pointing game for every image method (a known answer by construction).

For every cell of every grid (:mod:`.grids`) the cell's class is explained on the whole grid by
each method, from one shared pass per batch, and scored by :class:`.pointing.PointingGame`.
Results as the perturbation test writes them: per-batch shards with content digests
(``shards/``, resumable, a damaged shard recomputed), ``per_cell.npz``, ``results.json`` (mean and
95 % interval per method, the paired comparison ``complete`` vs ``gae``, the settings in words),
``results.md`` and ``grids.png`` (a few grids with their maps). Under ``torchrun`` batch ``j`` goes to
rank ``j mod world``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .. import viz
from ..errors import AttngradError
from ..explainer import Explainer
from ..io import load_image
from ..methods import METHODS, is_signed
from ..methods._common import check_positive, check_range
from .data import DataSet, preprocessor_of
from .distributed import barrier, dist_info
from .grids import Grid, canvas, draw, input_size, qualify
from .pointing import PointingGame
from .resumable import check_settings, compute_batches, new_paths, prepare_on_rank0
from .storage import RUN_FILE, check_shard, done_batches, image_records, records_digest, shard_path, write_shard


@dataclass
class GridSettings:
    """What a grid run does (stored in ``run.json``; a resume must match it)."""

    methods: list[str]
    n: int = 2
    count: int = 250
    seed: int = 0
    min_confidence: float = 0.5
    blank: bool = False
    loss: str = "logit"
    clip: bool = False  # explain a CLIP model's image tower (its methods: attngrad.clip.CLIP_METHODS)
    batch_size: int = 4
    resume: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # model, data, digests (filled by the run)
    #: ``{method: {option: value}}`` (``--method-option``); part of the run's identity when given
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self) -> None:
        if not self.methods:
            raise AttngradError("no methods given; name at least one (e.g. complete)")
        if self.clip:
            from ..clip.explainer import CLIP_METHODS

            known = list(CLIP_METHODS)
        else:
            known = list(METHODS)
        for m in self.methods:
            if m not in known:
                raise AttngradError(f"unknown {'CLIP image-tower' if self.clip else 'image'} method {m!r}; "
                                    f"choose from {', '.join(known)}")
        check_positive("evaluate grid", count=self.count, batch_size=self.batch_size)
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 2 <= self.n <= 8:
            raise AttngradError(f"evaluate grid: --n must be a whole number from 2 to 8, not {self.n!r}")
        check_range("evaluate grid", "min_confidence", self.min_confidence, 0.0, 1.0, open_low=True)
        if self.method_options:
            if self.clip:
                raise AttngradError("evaluate grid: --method-option is for the image methods; --clip runs its own")
            from ..methods import get_method
            from ..methods.options import check_options

            for name, opts in check_options(self.method_options, list(self.methods)).items():
                get_method(name, **opts)

    def identity(self) -> dict[str, Any]:
        keep = asdict(self)
        for key in ("resume", "progress", "batch_size"):
            keep.pop(key)
        if not keep["method_options"]:  # runs without options keep the identity they always had
            keep.pop("method_options")
        return keep


def interval(values: np.ndarray) -> dict[str, float]:
    """Mean and its 95 % interval (normal approximation, 1.96 standard errors) over the finite values."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    half = 1.96 * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "low": float(v.mean() - half), "high": float(v.mean() + half), "n": int(v.size)}


def prompt(name: str) -> str:
    """The text a CLIP image tower is explained for: ``a photo of a/an {class}`` (the stand-in's training prompt)."""
    name = name.split(",")[0].strip()
    return f"a photo of {'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


class ClipTower:
    """The grid game's view of a :class:`~attngrad.clip.ClipExplainer`'s image tower: class ``k`` is the
    text :func:`prompt` of ``labels[k]``; qualification is zero-shot over every class's text."""

    def __init__(self, clip: Any, labels: list[str]):
        self.clip, self.labels = clip, labels
        self.device = clip.device
        self.preprocessor = clip.model.image.preprocessor
        self._texts: torch.Tensor | None = None

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._texts is None:
            chunks = [self.clip.embed_texts(self.clip.model.text.encode([prompt(n) for n in self.labels[i:i + 256]]))
                      for i in range(0, len(self.labels), 256)]
            self._texts = torch.cat(chunks)
        return self.clip.model.logit_scale * (self.clip.embed_images(pixels.to(self.device)) @ self._texts.T)

    def maps(self, canvases: torch.Tensor, grids: list[Grid], methods: list[str], loss: str) -> dict[str, torch.Tensor]:
        """Per method (cells, gh, gw): each grid explained once for the texts of its cells' classes."""
        found: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
        for g, grid in enumerate(grids):
            texts = [prompt(self.labels[label]) for label in grid.labels if label >= 0]
            res = self.clip.explain_methods(canvases[g:g + 1], texts, methods, tower="image", loss=loss)
            for m in methods:
                found[m].append(res[m].maps[0])
        return {m: torch.cat(v) for m, v in found.items()}


def _preprocessor(explainer: Any) -> Any:
    return explainer.preprocessor if isinstance(explainer, ClipTower) else preprocessor_of(explainer.adapter)


def explain_grids(explainer: Explainer | ClipTower, canvases: torch.Tensor, grids: list[Grid], methods: list[str],
                  n: int, loss: str, options: dict[str, dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Every non-blank cell of every grid explained by every method (one shared pass); per cell the scores."""
    rows = [(g, c) for g, grid in enumerate(grids) for c, label in enumerate(grid.labels) if label >= 0]
    blank = [c for c, label in enumerate(grids[0].labels) if label < 0]
    cells = torch.tensor([c for _, c in rows])
    if isinstance(explainer, ClipTower):
        maps = explainer.maps(canvases, grids, methods, loss)
    else:
        pixels = canvases[[g for g, _ in rows]]
        targets = torch.tensor([grids[g].labels[c] for g, c in rows], device=pixels.device)
        results = explainer.explain_methods(pixels, methods, target=targets, loss=loss, options=options)
        maps = {m: results[m].maps for m in methods}
    game = PointingGame(n)
    arrays: dict[str, np.ndarray] = {"grid_row": np.asarray([g for g, _ in rows]), "cell": cells.numpy()}
    for name in methods:
        scores = game(maps[name], cells)
        arrays[f"{name}/pointing"] = scores["pointing"].numpy()
        if is_signed(name):
            arrays[f"{name}/negative_elsewhere"] = scores["negative_elsewhere"].numpy()
        if blank:
            arrays[f"{name}/on_blank"] = scores["positive_per_cell"][:, blank[0]].numpy()
    return arrays


def canvases(explainer: Explainer | ClipTower, seen: list, grids: list[Grid], n: int) -> torch.Tensor:
    """The grids' canvases as model input (B, 3, H, W) on the explainer's device (``seen``: the candidate images)."""
    pre = _preprocessor(explainer)
    size = input_size(pre)
    pictures = [canvas([seen[i] if i >= 0 else None for i in g.images], size, n, pre.resample) for g in grids]
    unit = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) for p in pictures])).permute(0, 3, 1, 2)
    return pre.normalize(unit * pre.rescale).to(explainer.device)


def _prepare(out: Path, identity: dict[str, Any], resume: bool) -> list[Path]:
    """Write ``run.json`` (a new run) or check it (resume); returns what this call created (:func:`~.resumable.new_paths`)."""
    record = out / RUN_FILE
    if check_settings(record, identity, resume=resume, start_on_resume=True):
        return []
    created = new_paths(out, record)
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(identity, indent=1))
    return created


def run_grid(explainer: Explainer | ClipTower, dataset: DataSet, out: str | Path,
             settings: GridSettings) -> dict[str, Any] | None:
    """Run the grid pointing game of ``settings.methods`` on ``dataset`` into ``out``; the summary on rank 0.

    ``explainer``: an image classifier's :class:`~attngrad.Explainer`, or a :class:`ClipTower` (CLIP's image tower).
    """
    settings.check()
    out = Path(out)
    rank, world = dist_info()
    if not dataset.samples:
        raise AttngradError(f"{dataset.root or 'the data folder'}: no image has a class this model knows; name the "
                            "images <wnid>_<name>.jpg, put them in class sub-folders or give --image-labels")
    pre = _preprocessor(explainer)
    seen = [pre.geometry(load_image(s.path)) for s in tqdm(dataset.samples, desc="loading", unit="img",
                                                             disable=not settings.progress or rank != 0)]
    labels = [s.label for s in dataset.samples]
    forward = (explainer.logits if isinstance(explainer, ClipTower)
               else lambda x: explainer.adapter.forward(x.to(explainer.device)).logits)
    probs = qualify(forward, pre, seen, labels, settings.n, min_confidence=settings.min_confidence)
    candidates = [i for i in range(len(seen)) if probs[i] >= settings.min_confidence]
    drawn = draw([labels[i] for i in candidates], settings.count, settings.n, seed=settings.seed, blank=settings.blank)
    grids = [Grid(tuple(candidates[i] if i >= 0 else -1 for i in g.images), g.labels) for g in drawn]
    settings.extra = {
        "model": (f"CLIP image tower: {explainer.clip.model.name}" if isinstance(explainer, ClipTower)
                  else type(explainer.adapter.model).__name__),
        "classes": len(explainer.labels),
        "images": len(seen), "qualifying": len(candidates),
        "images_digest": records_digest(image_records(dataset.samples, dataset.root or ".")),
        "grids_digest": _grids_digest(grids),
    }
    created = prepare_on_rank0(out, lambda: _prepare(out, settings.identity(), settings.resume))
    batches = [list(range(i, min(i + settings.batch_size, len(grids)))) for i in range(0, len(grids), settings.batch_size)]
    mine = list(range(rank, len(batches), world))
    done = done_batches(out, batches, mine)

    def compute(j: int, _: object) -> None:
        chosen = [grids[g] for g in batches[j]]
        arrays = explain_grids(explainer, canvases(explainer, seen, chosen, settings.n), chosen,
                               settings.methods, settings.n, settings.loss, settings.method_options)
        arrays["grid"] = np.asarray(batches[j])[arrays.pop("grid_row")]
        write_shard(shard_path(out, j), arrays)

    compute_batches([j for j in mine if j not in done], compute, created=created if rank == 0 else (), total=len(mine),
               desc="grid pointing game", progress=settings.progress and rank == 0)
    barrier()
    if rank != 0:
        return None
    summary = summarize_grid(out, settings, grids)
    if not isinstance(explainer, ClipTower):
        save_picture(explainer, seen, grids[:3], settings, out / "grids.png")
    return summary


def _grids_digest(grids: list[Grid]) -> str:
    import hashlib

    return hashlib.sha256(repr([(g.images, g.labels) for g in grids]).encode()).hexdigest()[:16]


def summarize_grid(out: Path, settings: GridSettings, grids: list[Grid]) -> dict[str, Any]:
    """Merge the shards into ``per_cell.npz`` and write ``results.json``, ``results.md`` and ``grids.png``."""
    n_batches = math.ceil(len(grids) / settings.batch_size)
    parts = [check_shard(shard_path(out, j)) for j in range(n_batches)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.savez(out / "per_cell.npz", **merged)  # type: ignore[arg-type]
    methods: dict[str, Any] = {}
    for name in settings.methods:
        entry = {"pointing": interval(merged[f"{name}/pointing"]), "signed": bool(is_signed(name))}
        if f"{name}/negative_elsewhere" in merged:
            entry["negative_elsewhere"] = interval(merged[f"{name}/negative_elsewhere"])
        if f"{name}/on_blank" in merged:
            entry["on_blank"] = interval(merged[f"{name}/on_blank"])
        methods[name] = entry
    summary: dict[str, Any] = {
        "settings": {**settings.identity(), "in_words": _in_words(settings)},
        "grids": len(grids), "cells": int(merged["cell"].size), "methods": methods,
        "chance": 1.0 / settings.n**2,
    }
    if "complete" in settings.methods and "gae" in settings.methods:
        diff = merged["complete/pointing"] - merged["gae/pointing"]
        summary["complete_minus_gae"] = interval(diff)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "results.md").write_text(markdown(summary))
    return summary


def _in_words(s: GridSettings) -> str:
    blank = "; the last cell is a mid-grey blank (control), not explained" if s.blank else ""
    return (f"{s.count} grids of {s.n}x{s.n} images of different classes (seed {s.seed}), each image correctly "
            f"classified alone at cell resolution with probability >= {s.min_confidence}{blank}; every cell's class "
            f"explained on the whole grid with loss {s.loss!r}; pointing score = positive attribution in the cell / "
            "all positive attribution (chance: the cell's area share)")


def markdown(summary: dict[str, Any]) -> str:
    """The results table (pointing score, negative share, blank share; mean and 95 % interval)."""
    def cell(entry: dict[str, Any] | None) -> str:
        return "" if entry is None else f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    lines = [f"Grid pointing game: {summary['settings']['in_words']}.", "",
             f"{summary['grids']} grids, {summary['cells']} explained cells; chance {summary['chance']:.3f}.", "",
             "| method | signed | pointing (higher is better) | cells scored | negative on other cells | "
             "positive on the blank cell |",
             "|---|---|---|---|---|---|"]
    ranked = sorted(summary["methods"].items(), key=lambda kv: -np.nan_to_num(kv[1]["pointing"]["mean"], nan=-1))
    for name, e in ranked:
        lines.append(f"| {name} | {'yes' if e['signed'] else 'no'} | {cell(e['pointing'])} | {e['pointing']['n']} | "
                     f"{cell(e.get('negative_elsewhere'))} | {cell(e.get('on_blank'))} |")
    if "complete_minus_gae" in summary:
        d = summary["complete_minus_gae"]
        lines += ["", f"Paired, per cell: complete - gae pointing = {cell(d)} (n = {d['n']})."]
    lines += ["", "A cell whose map has no positive attribution (an all-zero positive part) has no pointing "
              "score and is not counted (cells scored < cells)."]
    return "\n".join(lines) + "\n"


def save_picture(explainer: Explainer, seen: list, grids: list[Grid], settings: GridSettings, path: Path) -> Path:
    """A few grids (rows), each explained for its first cell's class by up to six of the methods (columns)."""
    methods = settings.methods[:6]
    pixels = canvases(explainer, seen, grids, settings.n)
    targets = torch.tensor([g.labels[0] for g in grids], device=pixels.device)
    options = {m: o for m, o in settings.method_options.items() if m in methods}
    res = explainer.explain_methods(pixels, methods, target=targets, loss=settings.loss, options=options)
    first = res[methods[0]]
    maps = [[res[m].maps[i] for m in methods] for i in range(len(grids))]
    rows = [f"explained: {viz.wrap_label(name)}\n(top-left cell)" for name in first.target_names]
    fig = viz.grid(first.images, maps, col_titles=["grid", *methods], row_titles=rows,
                   signs=[is_signed(m) for m in methods])
    return viz.save_figure(fig, path)
