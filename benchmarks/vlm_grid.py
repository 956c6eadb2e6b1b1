"""The VLM stand-in measured: the grid pointing game and patch deletion, every VLM method, both readings.

Grid pointing game (Böhle et al., CVPR 2021; Rao et al., CVPR 2022), as the stand-in can play it:
sample images the stand-in names correctly on their own are tiled 2 x 2 (each resized to one
quarter of the 128 px input, so each cell is 4 x 4 of the 8 x 8 patches); for every cell the
answer token explained is the first token of " <class name>" after "What is in this photo?", and
the score is the positive attribution inside that cell over all positive attribution (1 = all
inside, 0.25 = no better than spread evenly). ``random`` is the floor.

Patch deletion (on the single images): the 64 patches are set to the normalised mean (0), most
relevant first, 8 at a time; the target token's log-probability after each step; the area under
that curve (lower = the map found what the answer rests on) per method, next to ``random``.

    python benchmarks/vlm_grid.py --data ../shared/data --grids 60 --out docs/results/vlm

Writes ``pointing.csv`` / ``deletion.csv`` (one row per explained cell / image) and
``summary.json`` (mean and 95 % interval per method and reading).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from attngrad.vlm import VLMExplainer

METHODS = ["complete", "gae", "absolute", "rollout", "raw_attention", "grad_x_input", "random"]
READINGS = ["language", "vision"]
QUESTION = "What is in this photo?"


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % normal interval."""
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, half


def answers_of(ex: VLMExplainer, pixels: torch.Tensor, steps: int = 6) -> list[str]:
    """Greedy answers of a batch (no cache; the prompt is short)."""
    a = ex.adapter
    ids, start = a.prompt_ids(QUESTION)
    eos = a.tokenizer.eos_token_id
    new: list[list[int]] = [[] for _ in range(pixels.shape[0])]
    with torch.no_grad():
        for _ in range(steps):
            batch = a.batch([ids + n for n in new], [start] * len(new))
            nxt = a.forward(pixels, batch).logits.argmax(-1).tolist()
            for n, t in zip(new, nxt):
                n.append(t)
    return [a.tokenizer.decode(n[: n.index(eos)] if eos in n else n) for n in new]


def tile(images: list[Image.Image], size: int) -> Image.Image:
    half = size // 2
    out = Image.new("RGB", (size, size))
    for k, im in enumerate(images):
        out.paste(im.convert("RGB").resize((half, half), Image.Resampling.BICUBIC), ((k % 2) * half, (k // 2) * half))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with imagenet_classes.tsv and imagenet-sample/")
    ap.add_argument("--grids", type=int, default=60)
    ap.add_argument("--deletion-images", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    started = time.time()
    ex = VLMExplainer.from_pretrained(quiet=True)
    ex.batch_size = args.batch_size
    size = ex.adapter.model.config.vision_config.image_size
    rows = [line.split("\t") for line in (args.data / "imagenet_classes.tsv").read_text().splitlines()[1:]]
    items = [(r[2].replace("_", " "), args.data / r[3]) for r in rows]
    # 1. which images the stand-in names correctly alone
    good = []
    for i in tqdm(range(0, len(items), 32), desc="qualifying images"):
        chunk = items[i:i + 32]
        said = answers_of(ex, ex.pixels([Image.open(p) for _, p in chunk]))
        good += [(n, p) for (n, p), s in zip(chunk, said) if n.lower() in s.lower()]
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    # 2. the grid pointing game
    grids = [rng.sample(good, 4) for _ in range(args.grids)]
    cells = torch.zeros(ex.adapter.grid)
    point_rows = []
    for g, four in enumerate(tqdm(grids, desc="grids")):
        image = tile([Image.open(p) for _, p in four], size)
        pixels = ex.pixels([image] * 4)
        targets = [" " + n for n, _ in four]
        first = [int(ex.adapter.tokenizer(t, add_special_tokens=False)["input_ids"][0]) for t in targets]
        # row k of the batch explains cell k's class token: one forward + backward for the four cells
        out = ex.explain_methods(pixels, QUESTION, METHODS, readings=READINGS, target=first)
        for k in range(4):
            mask = cells.clone()
            gh, gw = ex.adapter.grid
            r0, c0 = (k // 2) * (gh // 2), (k % 2) * (gw // 2)
            mask[r0:r0 + gh // 2, c0:c0 + gw // 2] = 1
            for (method, reading), r in out.items():
                m = r.maps[k]
                pos = m.clamp(min=0)
                total = float(pos.sum())
                score = float((pos * mask).sum()) / total if total > 0 else float("nan")
                point_rows.append({"grid": g, "cell": k, "class": four[k][0], "method": method, "reading": reading,
                                   "pointing": score})
    # 3. patch deletion on single images
    del_rows = []
    chosen = rng.sample(good, min(args.deletion_images, len(good)))
    gh, gw = ex.adapter.grid
    ph, pw = size // gh, size // gw
    for name, path in tqdm(chosen, desc="deletion"):
        pixels = ex.pixels([Image.open(path)])
        token = int(ex.adapter.tokenizer(" " + name, add_special_tokens=False)["input_ids"][0])
        out = ex.explain_methods(pixels, QUESTION, METHODS, readings=READINGS, target=token)
        for (method, reading), r in out.items():
            order = r.maps[0].flatten().argsort(descending=True)
            steps = list(range(0, gh * gw + 1, 8))
            batch = pixels.repeat(len(steps), 1, 1, 1)
            for s_i, s in enumerate(steps):
                for p in order[:s].tolist():
                    i, j = divmod(p, gw)
                    batch[s_i, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = 0.0
            a = ex.adapter
            ids, start = a.prompt_ids(QUESTION)
            with torch.no_grad():
                logits = a.forward(batch, a.batch([ids] * len(steps), [start] * len(steps))).logits
            logp = logits.log_softmax(-1)[:, token].tolist()
            auc = sum((logp[t] + logp[t + 1]) / 2 for t in range(len(logp) - 1)) / (len(logp) - 1)
            del_rows.append({"class": name, "method": method, "reading": reading, "auc_logprob": auc,
                             "start_logprob": logp[0]})
    for name, table in (("pointing.csv", point_rows), ("deletion.csv", del_rows)):
        with open(args.out / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
    summary: dict = {"qualifying_images": len(good), "grids": args.grids, "deletion_images": len(chosen),
                     "seconds": round(time.time() - started, 1), "seed": args.seed, "pointing": {}, "deletion": {}}
    for method in METHODS:
        for reading in READINGS:
            key = f"{method}/{reading}"
            vals = [r["pointing"] for r in point_rows if r["method"] == method and r["reading"] == reading
                    and not math.isnan(r["pointing"])]
            summary["pointing"][key] = dict(zip(("mean", "ci95"), interval(vals))) | {"n": len(vals)}
            dv = [r["auc_logprob"] for r in del_rows if r["method"] == method and r["reading"] == reading]
            summary["deletion"][key] = dict(zip(("mean", "ci95"), interval(dv))) | {"n": len(dv)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
