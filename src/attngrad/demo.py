"""The demo gallery: the paper's multi-class cases on the shipped model, as PNG files + index.html.

Elephant + zebra (``el1``) and dog + cat (``catdog``), each class explained with
``gae``, ``complete`` and ``absolute`` side by side (the paper's Figure 5 setting), and a
comparison page with every method of the paper's Figure 13 (``compare.html``), and ``el1``
explained for two texts on both towers of the offline CLIP stand-in (:mod:`attngrad.clip_demo`), and
the LLaVA stand-in's "zebra" and "elephant" on ``el1`` (:mod:`attngrad.vlm_demo`).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from . import viz
from .cases import CASES, asset_image
from .clip_demo import clip_section
from .compare import build_comparison_page, is_signed, red_means
from .explainer import Explainer
from .vlm_demo import vlm_section

__all__ = ["CASES", "METHODS", "asset_image", "build_demo"]

METHODS = ("gae", "complete", "absolute")


def build_demo(
    explainer: Explainer, out: str | Path, methods: tuple[str, ...] = METHODS, multiclass: str | Path | None = None
) -> Path:
    """Write the gallery into ``out``; returns the path of ``index.html``.

    ``compare.html`` beside it shows the paper's Figure 13 set on the shipped images, and on
    the images of the folder ``multiclass`` when one is given (the rivals TIS and ViT-CX run
    hundreds of passes per image, so more images cost minutes on a CPU; see
    :func:`attngrad.compare.build_comparison_page`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for filename, classes in CASES.items():
        stem = Path(filename).stem
        path = asset_image(filename)
        top5 = explainer.predict(path, k=5)[0]
        results = explainer.explain_methods([path] * len(classes), methods, target=list(classes))
        images = results[methods[0]].images
        maps = [[results[m].maps[i] for m in methods] for i in range(len(classes))]
        titles = ["image", *(f"{m}\n({red_means(m)})" for m in methods)]
        fig = viz.grid(images, maps, col_titles=titles, row_titles=list(classes),
                       signs=[is_signed(m) for m in methods])
        viz.save_figure(fig, out / f"{stem}.png")
        for m in methods:
            np.save(out / f"{stem}_{m}.npy", results[m].numpy())
        rows = "".join(
            f"<tr><td>{html.escape(p.label)}</td><td>{p.probability:.3f}</td><td>{p.logit:.2f}</td></tr>" for p in top5
        )
        sections.append(
            f"<section><h2>{html.escape(filename)}: {' + '.join(map(html.escape, classes))}</h2>"
            f"<img src='{stem}.png' alt='{html.escape(stem)} explained'>"
            f"<table><tr><th>top-5</th><th>probability</th><th>logit</th></tr>{rows}</table></section>"
        )
    sections.append(clip_section(out))
    sections.append(vlm_section(out))
    compare = build_comparison_page(explainer, out, multiclass=multiclass, include_multiclass=multiclass is not None)
    meanings = "; ".join(f"<b>{html.escape(m)}</b>: {html.escape(red_means(m))}" for m in methods)
    index = out / "index.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>attngrad demo</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        "td,th{padding:2px 10px;text-align:left}</style></head><body>"
        "<h1>attngrad demo: multi-class images</h1>"
        "<p>Rows: the class explained. Columns: the methods (<b>gae</b>: positive gradient, Chefer et al. 2021; "
        "<b>complete</b>: signed attention x gradient, Cui, Fan &amp; Chen, eq. 5; <b>absolute</b>: eq. 6). "
        f"What red means: {meanings}. Each map is scaled by its own max |S|. "
        f"<a href='{compare.name}'>The paper's Figure 13 set compared (baselines, T-Attr, TAM, BI, TIS, "
        "ViT-CX, ...)</a>.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    return index
