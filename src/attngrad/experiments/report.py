"""The reproduction report: every experiment of the paper on one model, as ``report.html``.

``build_report(explainer, out)`` regenerates the equivalent of each of Cui, Fan &
Chen's figures (single-class maps, multi-class maps, attention transfer, external
guidance, detail interpretation, class rewriting) with every picture, caption
and number, plus ``numbers.json``. Images come from the shared data folder beside the clone when
present (``../shared/data``: ImageNet sample, multi-class images; see
:mod:`attngrad.gallery`), else from the images shipped with the package; a case
whose image is missing is listed as skipped.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .. import viz
from ..demo import CASES, asset_image
from ..gallery import resolve_gallery, shared_data, shipped_images
from ..methods import is_signed
from ..stitch import explain_guided
from .detail import detail_interpretation
from .rewrite import batch_summary, random_targets, rewrite, rewrite_batch, save_rewrite
from .transfer import attention_transfer, positive_share

if TYPE_CHECKING:
    from ..explainer import Explainer

SINGLE = ("n01871265_tusker.jpg", "n01944390_snail.jpg")
MULTI = {
    "el1.jpg": ("zebra", "African elephant"),
    "el2.jpg": ("zebra", "African elephant"),
    "el3.jpg": ("zebra", "African elephant"),
    "el4.jpg": ("zebra", "African elephant"),
    "el5.jpg": ("zebra", "African elephant"),
    "catdog.png": ("bull mastiff", "tiger cat"),
    "dogbird.png": ("basset", "macaw"),
}
GUIDED = ("n01944390_snail.jpg", "n01871265_tusker.jpg")


def find_image(name: str) -> Path | None:
    """A case's image: the shared multi-class folder, the ImageNet sample, or the shipped images."""
    data = shared_data()
    folders = () if data is None else (data / "multiclass", data / "imagenet-sample")
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    shipped = asset_image(name)
    return shipped if shipped.is_file() else None


@dataclass
class Section:
    title: str
    caption: str
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (file name, alt/caption)
    tables: list[tuple[list[str], list[list[object]]]] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def html(self) -> str:
        parts = [f"<section><h2>{html.escape(self.title)}</h2><p>{self.caption}</p>"]
        for note in self.notes:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        for name, alt in self.pictures:
            parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(alt)}'><figcaption>{html.escape(alt)}</figcaption></figure>")
        for headers, rows in self.tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        return "".join(parts) + "</section>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def overlay_row(cells: Sequence[tuple[Image.Image, torch.Tensor | np.ndarray | None, str]], path: Path, cell_size: float = 2.6) -> Path:
    """One row of pictures, each ``(image, map or None, title)``, with the shared [-1, 1] colour bar."""
    fig, axes = plt.subplots(1, len(cells), figsize=(cell_size * len(cells) + 1.2, cell_size + 0.6), squeeze=False)
    for ax, (image, scores, title) in zip(axes[0], cells):
        ax.imshow(image if scores is None else viz.overlay(image, scores))
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    viz.add_colorbar(fig, axes)
    return viz.save_figure(fig, path)


# --------------------------------------------------------------------------- sections


def single_class(ex: "Explainer", out: Path) -> Section:
    methods = ("absolute", "complete", "gae")
    sec = Section(
        "Single-class images: absolute vs complete vs gae",
        "Each image's predicted class, explained with <b>absolute</b> (eq. 6: where the encoder looks), "
        "<b>complete</b> (eq. 5, signed) and <b>gae</b> (eq. 4). On a single-class image the complete map is "
        "noisy: the 999 other classes pull the gradient in mixed directions (the paper's motivation for guidance).",
    )
    paths = [p for p in map(find_image, SINGLE) if p is not None]
    res = ex.explain_methods(paths, methods)
    top = ex.top_k(res["complete"].logits, 1)
    fig = viz.grid(
        res["complete"].images,
        [[res[m].maps[i] for m in methods] for i in range(len(paths))],
        col_titles=["image", *methods],
        row_titles=[f"{t[0].label} ({t[0].probability:.2f})" for t in top],
        signs=[is_signed(m) for m in methods],
    )
    viz.save_figure(fig, out / "single_class.png")
    sec.pictures.append(("single_class.png", "rows: tusker, snail; columns: absolute, complete, gae"))
    sec.tables.append((["image", "prediction", "probability"], [[p.name, t[0].label, t[0].probability] for p, t in zip(paths, top)]))
    return sec


def multi_class(ex: "Explainer", out: Path) -> Section:
    methods = ("gae", "complete")
    sec = Section(
        "Multi-class images",
        "Each class of a two-class image explained with <b>gae</b> and <b>complete</b>. Expected (paper, "
        "experiment 1): complete gives the explained class positive (red) and the other class negative (blue) "
        "attention. The table gives, for each method, the share of the map's positive mass (sum of max(S, 0)) "
        "inside the region where the <i>other</i> class's complete map is positive (lower is better; the region "
        "comes from complete, which may favour it).",
    )
    cases = [(find_image(n), n, c) for n, c in MULTI.items()]
    missing = [n for p, n, _ in cases if p is None]
    if missing:
        sec.notes.append(f"skipped (image not found): {', '.join(missing)}")
    found = [(p, n, c) for p, n, c in cases if p is not None]
    images = [p for p, _, classes in found for _ in classes]
    targets = [c for _, _, classes in found for c in classes]
    res = ex.explain_methods(images, methods, target=targets)
    probs = res["complete"].logits.softmax(-1)
    rows = []
    for k, (_path, name, classes) in enumerate(found):
        i, j = 2 * k, 2 * k + 1
        stem = Path(name).stem
        fig = viz.grid(
            res["complete"].images[i : j + 1],
            [[res[m].maps[r] for m in methods] for r in (i, j)],
            col_titles=["image", *methods],
            row_titles=[f"{c} ({float(probs[r, res['complete'].targets[r]]):.2f})" for c, r in zip(classes, (i, j))],
            signs=[is_signed(m) for m in methods],
        )
        viz.save_figure(fig, out / f"multi_{stem}.png")
        sec.pictures.append((f"multi_{stem}.png", f"{name}: {classes[0]} (top row) and {classes[1]} (bottom row)"))
        other_region = res["complete"].maps > 0
        for a, b in ((i, j), (j, i)):
            shares = [float(positive_share(res[m].maps[a], other_region[b])) for m in methods]
            rows.append([name, targets[a], float(probs[a, res["complete"].targets[a]]), *shares])
    sec.tables.append((["image", "class explained", "probability", *[f"{m}: positive share on the other class" for m in methods]], rows))
    sec.numbers = {"rows": rows}
    return sec


def transfer_section(ex: "Explainer", out: Path) -> Section:
    sec = Section(
        "Attention transfer",
        "Every layer's attention map is a learnable tensor initialised from the model's own maps, weights frozen; "
        "the target logit is descended (defaults of <code>attention_transfer</code>: Adam, lr 4e-4 — the paper's "
        "rate —, 12 steps) and the model is re-explained with complete after every step. Share: the positive mass "
        "of the target's map inside the region where the opposing class's step-0 complete map is positive. "
        "Expected: the positive attention moves off the target onto the other class. The GIFs show every step.",
    )
    rows = []
    for name, (target, opposing) in CASES.items():  # the demo's cases
        path = find_image(name)
        if path is None:
            sec.notes.append(f"skipped (image not found): {name}")
            continue
        res = attention_transfer(ex, path, target, opposing)
        stem = f"transfer_{Path(name).stem}"
        res.save(out, stem)
        sec.pictures += [
            (f"{stem}.png", f"{name}: {target} descended ({res.optimizer}, lr {res.lr:g})"),
            (f"{stem}_curve.png", f"{name}: logits and share per step"),
            (f"{stem}.gif", f"{name}: every step"),
        ]
        first, last = res.steps[0], res.steps[-1]
        best = max(res.steps, key=lambda s: s.opposing_share)
        rows.append([name, target, opposing, res.reproduction_error, last.step, first.target_logit, last.target_logit,
                     first.opposing_logit, last.opposing_logit, first.opposing_share, last.opposing_share,
                     f"{best.opposing_share:.3f} (step {best.step})"])
        sec.numbers[name] = res.rows()
    sec.tables.append((["image", "target", "opposing", "override error", "steps", "target logit: first", "last",
                        "opposing logit: first", "last", "share: first", "last", "max share"], rows))
    return sec


def guidance_section(ex: "Explainer", out: Path, gallery: str | os.PathLike | None) -> Section:
    sec = Section(
        "External attention guidance",
        "A zebra guide image is stitched beside the single-class image (left: original, right: guide; each "
        "resized to half of the original's frame); the original's class is explained with complete on the "
        "stitched input and the map is cropped back to the original's half (7 of the 14 patch columns).",
    )
    rows = []
    for name in GUIDED:
        path = find_image(name)
        if path is None:
            sec.notes.append(f"skipped (image not found): {name}")
            continue
        plain = ex.explain(path, method="complete")
        guided = explain_guided(ex, [path], "zebra", gallery=gallery)["complete"]
        stem = f"guided_{Path(name).stem}"
        label = plain.target_names[0]
        overlay_row(
            [
                (plain.images[0], None, f"image: {label}"),
                (plain.images[0], plain.maps[0], "complete, alone"),
                (guided.images[0], guided.maps[0], "complete, zebra guide\n(cropped back)"),
                (guided.stitched_images[0], guided.full_maps[0], "stitched input, full map"),
            ],
            out / f"{stem}.png",
        )
        sec.pictures.append((f"{stem}.png", f"{name}: {label} explained alone and with a zebra guide"))
        stitched_top = ex.top_k(guided.logits, 2)[0]
        rows.append([name, label, float(plain.logits[0].softmax(-1).max()),
                     ", ".join(f"{p.label} {p.probability:.2f}" for p in stitched_top), guided.guide])
    sec.tables.append((["image", "class explained", "probability alone", "stitched input top-2", "guide"], rows))
    return sec


#: The detail section's images, with the class explained and its contrasts (``None``: the top two). The paper's
#: second case is a kite image predicted "bald eagle"; the sample's kite image shows a magnolia tree (this model:
#: "hip"), so the pair is shown on the sample's bald-eagle image instead.
DETAIL_CASES: list[tuple[str, str | None, list[str] | None]] = [
    ("n01944390_snail.jpg", None, None), ("n01614925_bald_eagle.jpg", "bald eagle", ["kite"])]


def detail_section(ex: "Explainer", out: Path, gallery: str | os.PathLike | None) -> Section:
    sec = Section(
        "Detail interpretation (internal guidance)",
        "The top class t1 explained against a runner-up t2 with the normalised difference "
        "(logit[t1] - logit[t2]) / logit[t1] (eq. 8): red marks details pushing the model to t1, blue to t2. "
        "Under each map, a typical image of the class from the ImageNet sample. The paper's kite / bald eagle "
        "pair is shown on the sample's bald-eagle image (the sample's kite image shows a magnolia tree).",
    )
    rows = []
    for name, target, contrasts in DETAIL_CASES:
        path = find_image(name)
        if path is None:
            sec.notes.append(f"skipped (image not found): {name}")
            continue
        res = detail_interpretation(ex, path, k=3, target=target, contrasts=contrasts, gallery=gallery)
        stem = f"detail_{Path(name).stem}"
        res.save_figure(out / f"{stem}.png")
        sec.pictures.append((f"{stem}.png", f"{name}: {res.target} vs {', '.join(res.contrasts)}"))
        rows += [[name, res.target, res.probabilities[res.target], c, res.probabilities[c]] for c in res.contrasts]
        top = ex.predict(path, k=1)[0][0]
        if top.label != res.target:
            sec.notes.append(f"{name}: this model predicts {top.label} ({top.probability:.2f}); the pair is the paper's.")
    sec.tables.append((["image", "t1", "p(t1)", "t2", "p(t2)"], rows))
    return sec


def rewrite_section(ex: "Explainer", out: Path, batch: int, gallery: str | os.PathLike | None = None) -> Section:
    sec = Section(
        "Class rewriting",
        "Pixels updated one 8-bit level at a time against the gradient of the margin loss "
        "max_{c != to} logit[c] - logit[to] (the paper's logit[from] - logit[to] with from = the strongest other "
        "class), within an L-inf budget of 2/255, until the new class is top-1 with probability >= 0.90. Every "
        "number after rewriting is measured on the saved 8-bit PNG as reloaded.",
    )
    path = find_image("n01871265_tusker.jpg")
    if path is None:
        sec.notes.append("skipped (image not found): n01871265_tusker.jpg")
        return sec
    res = rewrite(ex, path, "bull mastiff", eps=2 / 255, steps=100, probability=0.9)
    paths = save_rewrite(ex, res, out, "rewrite_tusker")
    sec.pictures += [(paths["before_after"].name, "before / after, complete maps of tusker and bull mastiff"),
                     (paths["difference"].name, "the change, amplified so the largest maps to the full range")]
    sec.tables.append((["", "top-5 (probability, logit)"],
                       [["before", "; ".join(f"{p.label} {p.probability:.3f} / {p.logit:.3f}" for p in res.before)],
                        ["after", "; ".join(f"{p.label} {p.probability:.3f} / {p.logit:.3f}" for p in res.after)]]))
    sec.tables.append((["success", "steps", "L-inf (0..255)", "L2 ([0,1] units)", "PSNR (dB)", "SSIM"],
                       [[res.success, res.steps, res.linf, res.l2, res.psnr, res.ssim]]))
    sec.numbers["tusker"] = res.numbers()
    sample = resolve_gallery(gallery)
    if batch > 0 and sample != shipped_images():
        files = sorted(sample.glob("*.jpg"))
        picks = [files[i] for i in np.random.default_rng(0).choice(len(files), size=min(batch, len(files)), replace=False)]
        targets = random_targets(ex, picks, np.random.default_rng(0))
        results = rewrite_batch(ex, picks, targets, eps=2 / 255, steps=100, probability=0.9)
        summary = batch_summary(results)
        sec.tables.append((["batch: images", "success rate", "median L-inf", "median PSNR (dB)", "median SSIM", "median steps"],
                           [[summary["images"], summary["success_rate"], summary["median_linf_255"],
                             summary["median_psnr_db"], summary["median_ssim"], summary["median_steps"]]]))
        sec.notes.append(f"batch: {len(picks)} random ImageNet-sample images (seed 0), each to a random other class, same budget")
        sec.numbers["batch"] = summary
    return sec


def build_report(
    explainer: "Explainer",
    out: str | Path,
    gallery: str | os.PathLike | None = None,
    batch_images: int = 8,
    progress: bool = True,
) -> Path:
    """Run every experiment and write ``out/report.html`` (+ pictures, GIFs, CSVs, ``numbers.json``).

    ``batch_images``: how many random ImageNet-sample images the batch-rewriting table uses (0: none).
    """
    resolve_gallery(gallery)  # a --gallery that does not exist fails before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, Callable[[], Section]]] = [
        ("single-class", lambda: single_class(explainer, out)),
        ("multi-class", lambda: multi_class(explainer, out)),
        ("transfer", lambda: transfer_section(explainer, out)),
        ("guidance", lambda: guidance_section(explainer, out, gallery)),
        ("detail", lambda: detail_section(explainer, out, gallery)),
        ("rewriting", lambda: rewrite_section(explainer, out, batch_images, gallery)),
    ]
    sections, timings = [], {}
    bar = tqdm(jobs, desc="report", unit="section", disable=not progress)
    for name, job in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        sections.append(job())
        timings[name] = round(time.perf_counter() - start, 1)
    (out / "numbers.json").write_text(json.dumps({s.title: s.numbers for s in sections} | {"seconds": timings}, indent=2))
    model = type(explainer.adapter.model).__name__
    total = sum(timings.values())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>attngrad: reproduction report</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 1em}img{max-width:100%}"
        "figure{margin:1em 0}figcaption{font-size:90%;color:#444}td,th{padding:2px 8px;text-align:left;"
        "border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:0.5em 0 1.5em}.note{color:#a40}</style>"
        "</head><body><h1>Reproduction report</h1>"
        "<p>Cui, Fan &amp; Chen, <i>Transformer Interpretability from Perspective of Attention and Gradient</i>: "
        f"each experiment re-run on <b>{html.escape(model)}</b> ({len(explainer.labels)} classes). Maps use the "
        "diverging colour map on [-1, 1] after S / max|S|: red supports the explained class, blue opposes it; "
        f"colours compare regions within one map only. Generated in {total:.0f} s "
        f"({', '.join(f'{k} {v:g} s' for k, v in timings.items())}).</p>"
        + "".join(s.html() for s in sections)
        + "</body></html>"
    )
    index = out / "report.html"
    index.write_text(page)
    return index
