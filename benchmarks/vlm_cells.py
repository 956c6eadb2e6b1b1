"""Does the LLaVA stand-in tie a class name to its cell of a 2 x 2 grid, and which attributions find it?

Grids of four of the sample images the stand-in names alone (the 16 classes in ``NAMED``), drawn with a seeded
generator. For every cell, the explained quantity is the log-probability (occlusion) or the logit (attributions)
of the first token of the cell's class name after "What is in this photo?" (the trained question).

- occlusion, pixels: the cell painted grey (the pointing game's blank colour) and the whole model run again; the drop
  of each cell's class when its own cell is greyed against when another cell is (the ground truth of "ties the name
  to the cell");
- occlusion, tokens: only the cell's 49 image tokens replaced by those of an all-grey image (the ViT's mixing of
  the other cells left as it is): how much of the evidence sits in the cell's own tokens;
- pointing (share of positive attribution on the cell's image tokens, chance 0.25) over the language model's input
  embeddings of the image tokens: ``attnlrp`` (AttnLRP's rules through ``attngrad.lm.attnlrp.lrp_rules``),
  ``grad_x_input`` and integrated gradients (16 Gauss-Legendre nodes) from the grey image's tokens and from zero.

    python benchmarks/vlm_cells.py --data ../shared/data --grids 10 --json docs/results/vlm/cells.json
"""

from __future__ import annotations

import argparse
import json
import statistics as st
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from train_vlm import prompt_embeds, read_classes, sequences  # noqa: E402

from attngrad.evaluation.grids import canvas  # noqa: E402
from attngrad.lm.attnlrp import lrp_rules  # noqa: E402
from attngrad.vlm.load import build_stand_in, stand_in_settings  # noqa: E402

#: sample classes the shipped stand-in names correctly alone (docs/vlm.md)
NAMED = ["zebra", "African elephant", "goldfish", "great white shark", "ostrich", "hen", "stingray", "tiger shark",
         "kite", "bald eagle", "snail", "slug", "tusker", "cock", "electric ray", "tree frog"]
QUESTION = "What is in this photo?"


class _Shim(nn.Module):
    """The language model seen as a causal LM for :func:`lrp_rules` (``.config``, ``model.layers``)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.model, self.config = lm, lm.config


def _interval(values: list[float]) -> dict:
    return {"mean": round(st.mean(values), 4), "ci95": round(1.96 * st.stdev(values) / len(values) ** 0.5, 4),
            "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--grids", type=int, default=10)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16, help="integrated gradients' Gauss-Legendre nodes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = time.time()
    model, tok, pre = build_stand_in(quiet=True)
    for p in model.parameters():
        p.requires_grad_(False)
    lm = model.model.language_model
    lm.config._attn_implementation = "eager"
    shim = _Shim(lm)
    rows = {r[1]: r for r in read_classes(args.data)}
    head, tail, _ = sequences(tok, stand_in_settings()["template"], QUESTION, [])
    lo, hi = len(head) + 1, len(head) + 197  # the 196 patch tokens (the class token before them left out)
    pos = torch.arange(196)
    cell_of = ((pos // 14) // 7) * 2 + (pos % 14) // 7
    nodes, weights = np.polynomial.legendre.leggauss(args.steps)
    alphas, wts = ((nodes + 1) / 2).tolist(), (weights / 2).tolist()
    grey = canvas([None] * 4, (224, 224), 2, pre.resample)
    gen = torch.Generator().manual_seed(args.seed)
    drops: dict[str, tuple[list[float], list[float]]] = {"pixels": ([], []), "tokens": ([], [])}
    point: dict[str, list[float]] = {k: [] for k in ("attnlrp", "grad_x_input", "ig_grey", "ig_zero")}

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model.lm_head(lm(inputs_embeds=x).last_hidden_state[:, -1])

    def relevance(x: torch.Tensor, ids: torch.Tensor, rules: bool) -> torch.Tensor:
        x = x.detach().clone().requires_grad_(True)
        if rules:
            with lrp_rules(shim):
                value = logits_of(x).gather(1, ids[:, None]).sum()
        else:
            value = logits_of(x).gather(1, ids[:, None]).sum()
        (grad,) = torch.autograd.grad(value, x)
        return (x * grad).sum(-1).detach()

    def integrated(x: torch.Tensor, base: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[:2])
        for a, w in zip(alphas, wts):
            pt = (base + a * (x - base)).requires_grad_(True)
            (grad,) = torch.autograd.grad(logits_of(pt).gather(1, ids[:, None]).sum(), pt)
            total += w * ((x - base) * grad).sum(-1)
        return total

    def score(name: str, rel: torch.Tensor) -> None:
        r = rel[:, lo:hi].clamp(min=0)
        for k in range(4):
            point[name].append(float(r[k][cell_of == k].sum() / r[k].sum().clamp(min=1e-12)))

    for _ in range(args.grids):
        pick = [NAMED[i] for i in torch.randperm(len(NAMED), generator=gen)[:4].tolist()]
        seen = [pre.geometry(Image.open(rows[n][2]).convert("RGB")) for n in pick]
        images = [canvas(seen, (224, 224), 2, pre.resample)]
        images += [canvas([None if j == k else s for j, s in enumerate(seen)], (224, 224), 2, pre.resample)
                   for k in range(4)]
        ids = torch.tensor([tok(" " + n, add_special_tokens=False)["input_ids"][0] for n in pick])
        with torch.no_grad():
            feats = model.model.vision_tower(pre([*images, grey]), output_hidden_states=True).hidden_states[-1]
            blank, feats = feats[5], feats[:5]
            by_tokens = feats[:1].repeat(5, 1, 1)
            for k in range(4):
                chosen = torch.cat([torch.tensor([False]), cell_of == k])
                by_tokens[k + 1, chosen] = blank[chosen]
            for name, f in (("pixels", feats), ("tokens", by_tokens)):
                lp = logits_of(prompt_embeds(model, head, tail, f)).log_softmax(-1)[:, ids]
                drop = lp[0][None] - lp[1:]  # (greyed cell, class)
                for c in range(4):
                    drops[name][0].append(float(drop[c, c]))
                    drops[name][1].extend(float(drop[k, c]) for k in range(4) if k != c)
            x = prompt_embeds(model, head, tail, feats[:1]).expand(4, -1, -1)
            xg = prompt_embeds(model, head, tail, blank[None]).expand(4, -1, -1)
        score("attnlrp", relevance(x, ids, True))
        score("grad_x_input", relevance(x, ids, False))
        image = torch.zeros(x.shape[1], 1, dtype=torch.bool)
        image[lo:hi] = True  # only the image tokens move along the path; the text stays
        score("ig_grey", integrated(x, torch.where(image, xg, x), ids))
        score("ig_zero", integrated(x, torch.where(image, torch.zeros_like(x), x), ids))
    out = {
        "grids": args.grids, "cells": 4 * args.grids, "seed": args.seed, "steps": args.steps,
        "occlusion_drop_own_cell": {k: _interval(v[0]) for k, v in drops.items()},
        "occlusion_drop_other_cells": {k: _interval(v[1]) for k, v in drops.items()},
        "pointing": {k: _interval(v) for k, v in point.items()},
        "seconds": round(time.time() - started, 1),
        "command": f"python benchmarks/vlm_cells.py --data ../shared/data --grids {args.grids} --seed {args.seed}",
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
