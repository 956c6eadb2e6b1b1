"""Outside rows for the grid pointing game: pytorch-grad-cam's GradCAM (ViT reshape) and Captum's Saliency
and IntegratedGradients on the same grids as ``attngrad evaluate grid`` (same images, qualification,
seed and drawing), scored by the same :class:`attngrad.evaluation.pointing.PointingGame`.

The peers are not dependencies of attngrad: install them into a folder of their own and put it on
PYTHONPATH for this script only, e.g.

    pip install --no-deps --target PEERS grad-cam ttach opencv-python-headless captum
    PYTHONPATH=PEERS python benchmarks/grid_peers.py --data ../shared/data/imagenet-sample \\
        --grids 100 --json docs/results/grid/peers.json

GradCAM: the last block's first LayerNorm as the target layer (pytorch-grad-cam's ViT tutorial),
its output without the CLS token reshaped to the 14 x 14 patch grid. Saliency: |d logit / d pixels|
summed over channels. IntegratedGradients: baseline 0 in the model's input space (the normalised
mid-grey), ``--ig-steps`` Gauss-Legendre steps (Captum's default rule), summed over channels (signed).
``complete`` and ``gae`` are timed on the same batches for the cost column.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import write_json  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)
from torch import nn

from attngrad import Explainer
from attngrad.evaluation import discover
from attngrad.evaluation.grid import canvases, interval
from attngrad.evaluation.grids import Grid, draw, qualify
from attngrad.evaluation.pointing import PointingGame
from attngrad.io import load_image


class _Logits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--grids", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-confidence", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4, help="grids per batch")
    parser.add_argument("--ig-steps", type=int, default=20)
    parser.add_argument("--ig-grids", type=int, default=25, help="IntegratedGradients on the first K grids only (its cost)")
    parser.add_argument("--ig-batch", type=int, default=64, help="IntegratedGradients' internal batch size")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from captum.attr import IntegratedGradients, Saliency
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    ex = Explainer.from_pretrained(device=args.device)
    pre = ex.adapter.preprocessor
    dataset = discover(args.data, ex.labels)
    seen = [pre.geometry(load_image(s.path)) for s in dataset.samples]
    labels = [s.label for s in dataset.samples]
    probs = qualify(lambda x: ex.adapter.forward(x.to(ex.device)).logits, pre, seen, labels, 2, min_confidence=args.min_confidence)
    candidates = [i for i in range(len(seen)) if probs[i] >= args.min_confidence]
    grids = [Grid(tuple(candidates[i] for i in g.images), g.labels)
             for g in draw([labels[i] for i in candidates], args.grids, 2, seed=args.seed)]
    model = _Logits(ex.adapter.model).eval()
    grid_side = 224 // 16

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:, :].reshape(t.shape[0], grid_side, grid_side, t.shape[2]).permute(0, 3, 1, 2)

    cam = GradCAM(model=model, target_layers=[ex.adapter.model.vit.layers[-1].layernorm_before],
                  reshape_transform=reshape)
    saliency, ig = Saliency(model), IntegratedGradients(model)
    game = PointingGame(2)
    scores: dict[str, list[np.ndarray]] = {k: [] for k in ("gradcam", "saliency", "integrated_gradients",
                                                           "complete", "gae")}
    seconds: dict[str, float] = {k: 0.0 for k in scores}
    cells_done = ig_cells = 0
    for start in range(0, len(grids), args.batch_size):
        chosen = grids[start:start + args.batch_size]
        pixels = canvases(ex, seen, chosen, 2)
        x = pixels.repeat_interleave(4, dim=0)
        targets = torch.tensor([lab for g in chosen for lab in g.labels], device=ex.device)
        cells = torch.arange(4).repeat(len(chosen))

        def run(name, fn):
            if ex.device.type == "cuda":
                torch.cuda.synchronize(ex.device)
            t0 = time.perf_counter()
            maps = fn()
            if ex.device.type == "cuda":
                torch.cuda.synchronize(ex.device)
            seconds[name] += time.perf_counter() - t0
            scores[name].append(game(torch.as_tensor(maps).float().cpu(), cells)["pointing"].numpy())

        run("gradcam", lambda: cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))
        run("saliency", lambda: saliency.attribute(x, target=targets, abs=True).sum(dim=1).detach())
        if start < args.ig_grids:
            run("integrated_gradients", lambda: ig.attribute(x, baselines=torch.zeros_like(x), target=targets,
                                                             n_steps=args.ig_steps,
                                                             internal_batch_size=args.ig_batch).sum(dim=1).detach())
            ig_cells += len(targets)
        for name in ("complete", "gae"):
            run(name, lambda name=name: ex.explain(x, method=name, target=targets).maps)
        cells_done += len(targets)
        print(f"{cells_done} cells", flush=True)
    out = {name: {**interval(np.concatenate(v)),
                  "ms_per_cell": 1000 * seconds[name] / (ig_cells if name == "integrated_gradients" else cells_done)}
           for name, v in scores.items()}
    result = {"grids": len(grids), "cells": cells_done, "seed": args.seed, "min_confidence": args.min_confidence,
              "qualifying": len(candidates), "ig_steps": args.ig_steps, "threads": torch.get_num_threads(),
              "device": str(ex.device) if ex.device.type != "cuda" else torch.cuda.get_device_name(ex.device),
              "methods": out}
    for name, e in out.items():
        print(f"{name:>22}: pointing {e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]  {e['ms_per_cell']:.1f} ms/cell")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
