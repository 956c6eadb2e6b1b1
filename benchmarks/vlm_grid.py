"""The VLM stand-in measured: the grid pointing game and patch deletion, every VLM method, both readings.

Grid pointing game (Böhle et al., CVPR 2021; Rao et al., CVPR 2022), as a vision–language model
plays it, with the grids of ``attngrad evaluate grid`` (:mod:`attngrad.evaluation.grids`): a sample
image qualifies when the stand-in, seeing it alone at the resolution it has inside a cell (resized to
the cell and back), answers "What is in this photo?" with a greedy answer that contains its class
name; 2 x 2 grids of qualifying images of different classes are drawn (seeded); for every cell the
explained token is the first token of " <class name>", and the score is the positive attribution
inside that cell over all positive attribution (1 = all inside; a uniform map scores 0.25), with the
negative share on the other cells for signed maps (:class:`attngrad.evaluation.pointing.PointingGame`).
One forward + backward per grid serves its four cells, every method and both readings.

Patch deletion (on single qualifying images at full resolution): the 14 x 14 patches are set to the
normalised mean (0), most relevant first, ``--deletion-step`` at a time; the log-probability of the
answer's first token after each step; the area under that curve (lower = the map found what the
answer rests on) per method and reading, next to ``random``.

    python benchmarks/vlm_grid.py --data ../shared/data --grids 100 --out docs/results/vlm

``--loss diff`` explains each cell's name *rather than* the other three cells' names (the first token's logit minus
the mean of the other three names' first-token logits; :func:`attngrad.vlm.against_the_others`), and
adds ``hit``: whether the cell with the largest signed sum of the map is the named cell (chance 0.25). A grid
in which two names share their first token cannot tell them apart by it: ``diff`` skips it (counted in
``summary.json``'s ``diff_grids_skipped``).
``--deletion-images 0`` skips patch deletion.

Writes ``pointing.csv`` / ``deletion.csv`` (one row per explained cell / image) and ``summary.json``
(mean and 95 % interval per method and reading; the paired difference ``complete`` - ``gae``).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _timing import write_json  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)
from tqdm import tqdm

from attngrad.evaluation.grids import at_cell_resolution, canvas, draw, input_size
from attngrad.evaluation.pointing import PointingGame
from attngrad.io import load_image
from attngrad.vlm import VLMExplainer, against_the_others

METHODS = ["complete", "gae", "absolute", "rollout", "raw_attention", "grad_x_input", "random"]
READINGS = ["language", "vision"]
QUESTION = "What is in this photo?"


def interval(values: list[float]) -> dict:
    """Mean, half-width of the 95 % normal interval, and n."""
    mean = statistics.fmean(values) if values else float("nan")
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": round(mean, 4), "ci95": round(half, 4), "n": len(values)}


@torch.no_grad()
def answers(ex: VLMExplainer, pixels: torch.Tensor, steps: int = 6) -> list[str]:
    """Greedy answers of a batch of images to :data:`QUESTION` (transformers' generate, with its cache)."""
    a = ex.adapter
    ids, start = a.prompt_ids(QUESTION)
    batch = a.batch([ids] * pixels.shape[0], [start] * pixels.shape[0])
    out = a.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           pixel_values=pixels.to(a.device), max_new_tokens=steps, do_sample=False,
                           pad_token_id=a.pad_id)
    return [a.tokenizer.decode(o, skip_special_tokens=True) for o in out[:, batch.input_ids.shape[1]:]]


def first_token(ex: VLMExplainer, name: str) -> int:
    return int(ex.adapter.tokenizer(" " + name, add_special_tokens=False)["input_ids"][0])


def deletion_curve(ex: VLMExplainer, pixels: torch.Tensor, maps: torch.Tensor, token: int, step: int) -> list[float]:
    """Log-probability of ``token`` as the patches are zeroed in the order of ``maps`` (K, gh, gw): (K, steps+1)."""
    a = ex.adapter
    gh, gw = maps.shape[-2:]
    ph, pw = pixels.shape[-2] // gh, pixels.shape[-1] // gw
    counts = list(range(0, gh * gw + 1, step))
    rank = maps.flatten(1).argsort(dim=1, descending=True).argsort(dim=1)  # (K, P): each patch's place in the order
    keep = (rank[:, None, :] >= torch.tensor(counts)[None, :, None]).float()  # (K, S, P)
    keep = keep.reshape(-1, 1, gh, gw).repeat_interleave(ph, 2).repeat_interleave(pw, 3)
    batch_pixels = pixels.expand(keep.shape[0], -1, -1, -1) * keep
    ids, start = a.prompt_ids(QUESTION)
    logp = []
    with torch.no_grad():
        for chunk in batch_pixels.split(16):
            b = a.batch([ids] * chunk.shape[0], [start] * chunk.shape[0])
            logp.append(a.forward(chunk, b).logits.float().log_softmax(-1)[:, token])
    return torch.cat(logp).reshape(maps.shape[0], len(counts)).tolist()



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with imagenet_classes.tsv and imagenet-sample/")
    ap.add_argument("--grids", type=int, default=100)
    ap.add_argument("--deletion-images", type=int, default=30)
    ap.add_argument("--deletion-step", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss", choices=("logit", "diff", "both"), default="logit",
                    help="diff: each cell's name against the mean of the other three cells' names; both: each grid "
                         "explained with both losses (the diff rows' keys start with 'diff:')")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    started = time.time()
    ex = VLMExplainer.from_pretrained(quiet=True)
    pre = ex.preprocess
    size = input_size(pre)
    rows = [line.split("\t") for line in (args.data / "imagenet_classes.tsv").read_text().splitlines()[1:]]
    names = [r[2].replace("_", " ") for r in rows]
    seen = [pre.geometry(load_image(args.data / r[3].strip())) for r in tqdm(rows, desc="loading")]
    # 1. which images the stand-in names correctly alone, at cell resolution
    good: list[int] = []
    for i in tqdm(range(0, len(seen), 25), desc="qualifying images"):
        small = [at_cell_resolution(im, size, 2, pre.resample) for im in seen[i:i + 25]]
        said = answers(ex, ex.pixels(small))
        good += [i + k for k, s in enumerate(said) if names[i + k].lower() in s.lower()]
    args.out.mkdir(parents=True, exist_ok=True)
    # 2. the grid pointing game: batch row k explains cell k's class on the same grid
    grids = draw([int(rows[i][0]) for i in good], args.grids, 2, seed=args.seed)
    game = PointingGame(2)
    point_rows = []
    skipped_diff = 0
    losses = ["logit", "diff"] if args.loss == "both" else [args.loss]
    for g, grid in enumerate(tqdm(grids, desc="grids")):
        image = canvas([seen[good[k]] for k in grid.images], size, 2, pre.resample)
        cells = [names[good[k]] for k in grid.images]
        tokens = [first_token(ex, c) for c in cells]
        for loss in losses:
            if loss == "diff" and len(set(tokens)) < len(tokens):  # two names of one first token: not told apart
                skipped_diff += 1
                continue
            out = ex.explain_methods(ex.pixels([image] * 4), QUESTION, METHODS, readings=READINGS, target=tokens,
                                     loss=against_the_others(tokens) if loss == "diff" else "logit")
            for (method, reading), res in out.items():
                scores = game(res.maps, torch.arange(4))
                h, w = res.maps.shape[-2:]
                sums = res.maps.reshape(4, 2, h // 2, 2, w // 2).sum((2, 4)).reshape(4, 4)  # signed sum per cell
                for k in range(4):
                    point_rows.append({"grid": g, "cell": k, "class": cells[k], "loss": loss,
                                       "method": ("diff:" if loss == "diff" else "") + method, "reading": reading,
                                       "pointing": float(scores["pointing"][k]),
                                       "negative_elsewhere": float(scores["negative_elsewhere"][k]),
                                       "hit": float(int(sums[k].argmax()) == k
                                                    and bool(sums[k].max() > sums[k].min()))})
    # 3. patch deletion on single images
    rng = np.random.default_rng(args.seed)
    chosen = [good[int(k)] for k in rng.choice(len(good), size=min(args.deletion_images, len(good)), replace=False)]
    del_rows = []
    for i in tqdm(chosen, desc="deletion"):
        pixels = ex.pixels([seen[i]])
        token = first_token(ex, names[i])
        out = ex.explain_methods(pixels, QUESTION, METHODS, readings=READINGS, target=token)
        keys = list(out)
        curves = deletion_curve(ex, pixels, torch.cat([out[k].maps for k in keys]), token, args.deletion_step)
        for (method, reading), curve in zip(keys, curves):
            auc = float(np.trapezoid(curve) / (len(curve) - 1))
            del_rows.append({"class": names[i], "method": method, "reading": reading, "auc_logprob": auc,
                             "start_logprob": curve[0]})
    for name, table in (("pointing.csv", point_rows), ("deletion.csv", del_rows)):
        if not table:
            continue
        with open(args.out / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    summary: dict = {"qualifying_images": len(good), "grids": len(grids), "cells": 4 * len(grids),
                     "diff_grids_skipped": skipped_diff, "deletion_images": len(chosen),
                     "deletion_step": args.deletion_step, "seed": args.seed,
                     "loss": args.loss, "seconds": round(time.time() - started, 1), "pointing": {},
                     "negative_elsewhere": {}, "hit_signed_cell_sum": {}, "deletion_auc_logprob": {},
                     "command": f"python benchmarks/vlm_grid.py --data ../shared/data --grids {args.grids} "
                                f"--deletion-images {args.deletion_images} --deletion-step {args.deletion_step} --out OUT"
                                + (f" --loss {args.loss}" if args.loss != "logit" else "")}
    for method in [("diff:" if loss == "diff" else "") + m for loss in losses for m in METHODS]:
        for reading in READINGS:
            key = f"{method}/{reading}"
            mine = [r for r in point_rows if r["method"] == method and r["reading"] == reading]
            summary["pointing"][key] = interval([r["pointing"] for r in mine if not math.isnan(r["pointing"])])
            summary["hit_signed_cell_sum"][key] = interval([r["hit"] for r in mine])
            neg = [r["negative_elsewhere"] for r in mine if not math.isnan(r["negative_elsewhere"])]
            if neg and method.removeprefix("diff:") in ("complete", "grad_x_input"):
                summary["negative_elsewhere"][key] = interval(neg)
            summary["deletion_auc_logprob"][key] = interval(
                [r["auc_logprob"] for r in del_rows if r["method"] == method and r["reading"] == reading])
    for reading in READINGS:
        pair = {}
        for r in point_rows:
            if r["reading"] == reading and r["method"] in ("complete", "gae"):
                pair.setdefault((r["grid"], r["cell"]), {})[r["method"]] = r["pointing"]
        diffs = [v["complete"] - v["gae"] for v in pair.values()
                 if len(v) == 2 and not (math.isnan(v["complete"]) or math.isnan(v["gae"]))]
        summary[f"complete_minus_gae/{reading}"] = interval(diffs)
        if len(losses) == 2:  # the same cells explained with both losses: diff - logit, paired
            for what in ("pointing", "hit"):
                by: dict = {}
                for r in point_rows:
                    if r["reading"] == reading and r["method"] in ("complete", "diff:complete"):
                        by.setdefault((r["grid"], r["cell"]), {})[r["method"]] = r[what]
                gains = [v["diff:complete"] - v["complete"] for v in by.values()
                         if len(v) == 2 and not (math.isnan(v["complete"]) or math.isnan(v["diff:complete"]))]
                summary[f"complete_diff_minus_logit_{what}/{reading}"] = interval(gains)
    write_json(args.out / "summary.json", summary)  # strict JSON: an empty row's mean is null, not NaN
    print((args.out / "summary.json").read_text(), end="")


if __name__ == "__main__":
    main()
