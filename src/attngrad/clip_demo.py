"""The demo's image–text section: ``el1`` explained for two texts on both towers of the CLIP stand-in.

The offline model is the LiT-style stand-in (shipped ViT-Ti + all-MiniLM-L6-v2 with two trained
projections; :mod:`attngrad.clip`), labelled as such on the page. Needs the ``text`` extra.
"""

from __future__ import annotations

import html
from pathlib import Path

from . import viz
from .cases import asset_image

__all__ = ["TEXTS", "clip_section"]

TEXTS = ("a photo of a zebra", "a photo of an elephant")
_METHODS = ("complete", "gae")


def clip_section(out: str | Path) -> str:
    """Write ``clip_el1.png`` into ``out``; return the HTML section (empty when the text extra is missing)."""
    try:
        from .clip import ClipExplainer
        from .text.display import colour_bar_html, html_text, merge_words
    except ImportError:
        return ""
    explainer = ClipExplainer.from_pretrained()
    image = asset_image("el1.jpg")
    texts = list(TEXTS)
    maps = explainer.explain_methods(image, texts, list(_METHODS), tower="image")
    words = explainer.explain_methods(image, texts, ["complete"], tower="text")["complete"]
    shown = maps[_METHODS[0]].images[0]
    rows = [[maps[m].maps[0, k] for k in range(len(texts))] for m in _METHODS]
    fig = viz.grid([shown] * len(rows), rows, col_titles=["image", *texts], row_titles=list(_METHODS))
    png = viz.save_figure(fig, Path(out) / "clip_el1.png")
    batch = words.batch
    lines = []
    for k, text in enumerate(texts):
        real = len(batch.tokens[k])
        merged = merge_words(text, batch.tokens[k], words.maps[0, k, :real].tolist(), batch.word_ids[k],
                             batch.offsets[k], batch.content[k, :real].tolist())
        lines.append(f"<p>cos = {float(words.similarity[0, k]):.3f}: {html_text(text, merged)}</p>")
    name = html.escape(explainer.model.name)
    note = " — a <b>stand-in</b> for CLIP trained on 1000 images, not CLIP" if explainer.model.stand_in else ""
    return (
        f"<section><h2>Image–text: el1 against two texts ({name}{note})</h2>"
        "<p>Image tower: rows are methods, columns the texts; the map explains cos(image, text) "
        "(complete: red supports the match, blue opposes it; gae: magnitude). Text tower, complete: "
        "each word's contribution to the same cosine.</p>"
        f"<img src='{png.name}' alt='el1 explained for two texts'>{''.join(lines)}{colour_bar_html()}</section>"
    )
