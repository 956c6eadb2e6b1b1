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

``--loss diff`` explains the cell's class name *rather than* the other three cells' names: the quantity is
``logit[own] - mean(logit[other three])`` (the first tokens; the paper's contrastive loss against the mean of the
other names), for every attribution. Both losses add ``complete`` and ``gae`` (both readings, through
:class:`attngrad.vlm.VLMExplainer` with that loss as a callable), ``grad_x_input`` at the vision tower's output
(before the projector), and a second score, ``hit``: whether the cell with the largest *signed sum* of relevance over
its 49 tokens (patches) is the named cell (chance 0.25). The occlusions of the same quantity are reported as the
reference rows (the known answer's own method, not a rival).

    python benchmarks/vlm_cells.py --data ../shared/data --grids 10 --json docs/results/vlm/cells.json
    python benchmarks/vlm_cells.py --data ../shared/data --grids 10 --loss diff --ig-zero 0 \
        --json docs/results/vlm/cells_diff.json
    python benchmarks/vlm_cells.py --data ../shared/data --el1 --json docs/results/vlm/el1.json

``--el1`` also writes the greedy answer to "What animal is this?" on el1 and, as the maps' reference, the first-token
logits of " zebra", " elephant" and " African" with the zebra's or the elephant's box greyed (:func:`el1_occlusion`).
``--projector PATH`` measures a candidate projector (a ``scripts/train_vlm.py --out`` folder's file) instead of the
shipped one.
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
from _timing import write_json  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)
from train_vlm import prompt_embeds, read_classes, sequences  # noqa: E402

from attngrad.evaluation.grids import canvas  # noqa: E402
from attngrad.evaluation.pointing import PointingGame  # noqa: E402
from attngrad.lm.attnlrp import lrp_rules  # noqa: E402
from attngrad.vlm import VLMExplainer, against_the_others  # noqa: E402
from attngrad.vlm.load import stand_in_settings  # noqa: E402

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


def el1_shares(ex: VLMExplainer) -> dict:
    """Shares of the positive map on el1's zebra (rows 5-11, columns 0-4 of the 14 x 14 grid) and elephant (columns
    7-13, rows 1-13), the bottom-left corner patches (rows 11-13, columns 0-2) left out as in tests/vlm/test_stand_in.py;
    " zebra" and " elephant" with the logit loss and each against the other with ``diff``."""
    shares = {}
    for loss, target, contrast in (("logit", " zebra", None), ("logit", " elephant", None),
                                   ("diff", " zebra", " elephant"), ("diff", " elephant", " zebra")):
        out = ex.explain_methods("el1", "What animal is this?", ["complete", "gae", "grad_x_input"],
                                 readings=("language", "vision"), target=target, contrast=contrast, loss=loss)
        for (method, reading), res in out.items():
            key = f"{loss}:{target.strip()}" + (f"-vs-{contrast.strip()}" if contrast else "") + f"/{method}/{reading}"
            shares[key] = region_shares(res.maps[0])
    return shares


def region_shares(patch_map: torch.Tensor) -> dict:
    """One 14 x 14 map's positive part's shares on el1's zebra (rows 5-11, columns 0-4) and elephant (rows 1-13,
    columns 7-13), the bottom-left corner patches (rows 11-13, columns 0-2) left out."""
    m = patch_map.clamp(min=0).clone()
    m[11:, :3] = 0
    return {"zebra": round(float(m[5:12, 0:5].sum() / m.sum()), 3),
            "elephant": round(float(m[1:, 7:].sum() / m.sum()), 3)}


@torch.no_grad()
def el1_occlusion(ex: VLMExplainer) -> dict:
    """The reference for el1's maps: the first-token logits of " zebra", " elephant" and " African" after "What animal
    is this?" on el1 (resized to 224 px) as it is, with the zebra's box (rows 5-11, columns 0-4 of the patch grid)
    painted grey (the pointing game's blank colour), and with the elephant's box (rows 1-13, columns 7-13)."""
    from attngrad.cases import asset_image
    from attngrad.evaluation.grids import BLANK

    model, tok = ex.adapter.model, ex.adapter.tokenizer
    size = model.config.vision_config.image_size
    patch = model.config.vision_config.patch_size  # the boxes are in patches of el1's grid
    image = Image.open(asset_image("el1.jpg")).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    boxes = {"none": None, "zebra": (0, 5 * patch, 5 * patch, 12 * patch), "elephant": (7 * patch, patch, size, size)}
    images = []
    for box in boxes.values():
        im = image.copy()
        if box is not None:
            im.paste(Image.new("RGB", (box[2] - box[0], box[3] - box[1]), BLANK), box[:2])
        images.append(im)
    head, tail, _ = sequences(tok, stand_in_settings()["template"], "What animal is this?", [])
    hidden = model.model.vision_tower(ex.preprocess(images), output_hidden_states=True).hidden_states[-1]
    x = prompt_embeds(model, head, tail, hidden)
    logits = model.lm_head(model.model.language_model(inputs_embeds=x).last_hidden_state[:, -1])
    words = (" zebra", " elephant", " African")
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    return {f"greyed:{name}": {w.strip(): round(float(row[i]), 2) for w, i in zip(words, ids)}
            for name, row in zip(boxes, logits)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--grids", type=int, default=10)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16, help="integrated gradients' Gauss-Legendre nodes (0: no integrated gradients)")
    ap.add_argument("--loss", choices=("logit", "diff"), default="logit",
                    help="diff: the cell's name's logit minus the mean of the other three names' logits")
    ap.add_argument("--ig-zero", type=int, choices=(0, 1), default=1, help="also integrated gradients from zero")
    ap.add_argument("--el1", action="store_true", help="only the shares of el1's maps on its zebra and elephant")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--projector", type=Path, default=None,
                    help="the stand-in with this projector (a scripts/train_vlm.py output) instead of the shipped one")
    args = ap.parse_args()
    started = time.time()
    ex = VLMExplainer.from_pretrained(quiet=True)
    if args.projector is not None:
        from safetensors.torch import load_file

        proj = ex.adapter.model.model.multi_modal_projector
        proj.load_state_dict({k: v.float() for k, v in load_file(str(args.projector)).items()})
    if args.el1:
        said = ex.adapter.tokenizer.decode(ex.generate("el1", "What animal is this?", max_new_tokens=6),
                                           skip_special_tokens=True)
        record = {"el1": el1_shares(ex), "answer": said, "occlusion_logits": el1_occlusion(ex), "command": "python "
                  "benchmarks/vlm_cells.py --data ../shared/data --el1"
                  + (f" --projector OUT/{args.projector.name}" if args.projector else "")}
        print(json.dumps(record, indent=1))
        if args.json:
            write_json(args.json, record)
        return
    model, tok, pre = ex.adapter.model, ex.adapter.tokenizer, ex.preprocess
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
    nodes, weights = np.polynomial.legendre.leggauss(max(args.steps, 1))
    alphas, wts = ((nodes + 1) / 2).tolist(), (weights / 2).tolist()
    grey = canvas([None] * 4, (224, 224), 2, pre.resample)
    gen = torch.Generator().manual_seed(args.seed)
    drops: dict[str, tuple[list[float], list[float]]] = {"pixels": ([], []), "tokens": ([], [])}
    names = ["attnlrp", "grad_x_input"] + (["ig_grey"] if args.steps else []) + (["ig_zero"] if args.ig_zero else [])
    names += ["grad_x_input_vision_out", "complete_language", "complete_vision", "gae_language", "gae_vision"]
    point: dict[str, list[float]] = {k: [] for k in names}
    hit: dict[str, list[float]] = {k: [] for k in names}
    reference: dict[str, list[float]] = {"occlusion_pixels": [], "occlusion_tokens": []}
    game = PointingGame(2)

    def value_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The explained quantity per row k (cell k): its name's logit, or that minus the other names' mean."""
        if args.loss == "logit":
            return logits.gather(1, ids[:, None])[:, 0]
        return against_the_others(ids.tolist())(logits, ids)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model.lm_head(lm(inputs_embeds=x).last_hidden_state[:, -1])

    def relevance(x: torch.Tensor, ids: torch.Tensor, rules: bool) -> torch.Tensor:
        x = x.detach().clone().requires_grad_(True)
        if rules:
            with lrp_rules(shim):
                value = value_of(logits_of(x), ids).sum()
        else:
            value = value_of(logits_of(x), ids).sum()
        (grad,) = torch.autograd.grad(value, x)
        return (x * grad).sum(-1).detach()

    def integrated(x: torch.Tensor, base: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[:2])
        for a, w in zip(alphas, wts):
            pt = (base + a * (x - base)).requires_grad_(True)
            (grad,) = torch.autograd.grad(value_of(logits_of(pt), ids).sum(), pt)
            total += w * ((x - base) * grad).sum(-1)
        return total

    def score_cells(name: str, per_token: torch.Tensor) -> None:
        """per_token: (4, 196) relevance of the patch tokens, row k explaining cell k."""
        r = per_token.clamp(min=0)
        sums = torch.stack([per_token[:, cell_of == c].sum(1) for c in range(4)], 1)  # (4 rows, 4 cells)
        for k in range(4):
            point[name].append(float(r[k][cell_of == k].sum() / r[k].sum().clamp(min=1e-12)))
            hit[name].append(float(int(sums[k].argmax()) == k))

    def score(name: str, rel: torch.Tensor) -> None:
        score_cells(name, rel[:, lo:hi])

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
                full = logits_of(prompt_embeds(model, head, tail, f))
                lp = full.log_softmax(-1)[:, ids]
                drop = lp[0][None] - lp[1:]  # (greyed cell, class)
                for c in range(4):
                    drops[name][0].append(float(drop[c, c]))
                    drops[name][1].extend(float(drop[k, c]) for k in range(4) if k != c)
                # the reference: the explained quantity's drop when cell k is greyed, per explained cell c
                v = torch.stack([value_of(full[j].expand(4, -1), ids) for j in range(5)])  # (5, 4 explained)
                vdrop = (v[0][None] - v[1:]).T  # (explained cell c, greyed cell k)
                for c in range(4):
                    reference[f"occlusion_{name}"].append(float(int(vdrop[c].argmax()) == c))
            x = prompt_embeds(model, head, tail, feats[:1]).expand(4, -1, -1)
            xg = prompt_embeds(model, head, tail, blank[None]).expand(4, -1, -1)
        score("attnlrp", relevance(x, ids, True))
        score("grad_x_input", relevance(x, ids, False))
        image = torch.zeros(x.shape[1], 1, dtype=torch.bool)
        image[lo:hi] = True  # only the image tokens move along the path; the text stays
        if args.steps:
            score("ig_grey", integrated(x, torch.where(image, xg, x), ids))
        if args.ig_zero and args.steps:
            score("ig_zero", integrated(x, torch.where(image, torch.zeros_like(x), x), ids))
        f = feats[:1].expand(4, -1, -1).detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(value_of(logits_of(prompt_embeds(model, head, tail, f)), ids).sum(), f)
        score_cells("grad_x_input_vision_out", (f * grad).sum(-1).detach()[:, 1:])  # the class token left out
        maps_out = ex.explain_methods(ex.pixels(images[:1]).expand(4, -1, -1, -1), QUESTION, ["complete", "gae"],
                                 readings=("language", "vision"), target=ids.tolist(),
                                 loss=lambda logits, targets, contrasts=None: value_of(logits, targets))
        for (method, reading), res in maps_out.items():
            maps = res.maps.reshape(4, 196)  # the 14 x 14 patch grid, row-major like cell_of
            score_cells(f"{method}_{reading}", maps)
            share = game(res.maps, torch.arange(4))["pointing"]
            assert torch.allclose(share, torch.tensor(point[f"{method}_{reading}"][-4:]), atol=1e-4)
    out = {
        "grids": args.grids, "cells": 4 * args.grids, "seed": args.seed, "steps": args.steps,
        "occlusion_drop_own_cell": {k: _interval(v[0]) for k, v in drops.items()},
        "occlusion_drop_other_cells": {k: _interval(v[1]) for k, v in drops.items()},
        "loss": args.loss,
        "pointing": {k: _interval(v) for k, v in point.items()},
        "hit_signed_cell_sum": {k: _interval(v) for k, v in hit.items()},
        "reference_hit": {k: _interval(v) for k, v in reference.items()},
        "seconds": round(time.time() - started, 1),
        "command": f"python benchmarks/vlm_cells.py --data ../shared/data --grids {args.grids} --seed {args.seed}"
                   + (f" --steps {args.steps}" if args.steps != 16 else "")
                   + (f" --loss {args.loss} --ig-zero {args.ig_zero}" if args.loss != "logit" or not args.ig_zero else ""),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
