"""The demo's vision–language section: why did the stand-in say "zebra"? ``el1`` explained for two answers.

The offline model is the LLaVA stand-in (shipped ViT-Ti + SmolLM2-135M-Instruct with a projector trained
here; :mod:`attngrad.vlm.load`), labelled as such on the page. Needs the ``lm`` extra and the shipped projector.
"""

from __future__ import annotations

import html
from pathlib import Path

from . import viz
from .cases import asset_image
from .io import load_image

__all__ = ["QUESTION", "ANSWERS", "vlm_figure", "vlm_section"]

QUESTION = "What animal is this?"
#: (column title, target, contrast): the two answers alone, then one against the other
ANSWERS = ((" zebra", " zebra", None), (" elephant", " elephant", None),
           ("zebra rather than elephant", " zebra", " elephant"))
_READINGS = ("language", "vision")


def vlm_figure(explainer, out: str | Path, *, method: str = "complete", name: str = "vlm_el1.png"):
    """Write ``el1`` explained for each of :data:`ANSWERS` (columns) in both readings (rows); returns the
    path and the greedy answer."""
    image = load_image(asset_image("el1.jpg"))
    alone = [a for a in ANSWERS if a[2] is None]
    tokenizer = explainer.adapter.tokenizer
    ids = [int(tokenizer(target, add_special_tokens=False)["input_ids"][0]) for _, target, _ in alone]
    singles = explainer.explain_methods([image] * len(alone), QUESTION, [method], readings=list(_READINGS), target=ids)
    rows: list[list] = [[singles[(method, r)].maps[k] for k in range(len(alone))] for r in _READINGS]
    for _, target, contrast in (a for a in ANSWERS if a[2] is not None):  # one answer against the other
        pair = explainer.explain_methods(image, QUESTION, [method], readings=list(_READINGS), target=target,
                                         contrast=contrast, loss="diff")
        for i, reading in enumerate(_READINGS):
            rows[i].append(pair[(method, reading)].maps[0])
    size = explainer.adapter.model.config.vision_config.image_size
    shown = image.resize((size, size))
    fig = viz.grid([shown] * len(rows), rows, col_titles=["image", *(a[0] for a in ANSWERS)],
                   row_titles=[f"{method}, {r} reading" for r in _READINGS], signs=[True] * len(ANSWERS))
    said = tokenizer.decode(explainer.generate(image, QUESTION, max_new_tokens=6),
                                              skip_special_tokens=True)
    return viz.save_figure(fig, Path(out) / name), said


def vlm_section(out: str | Path) -> str:
    """Write ``vlm_el1.png`` into ``out``; return the HTML section (empty without the lm extra or the projector)."""
    try:
        from .vlm import VLMExplainer
        from .vlm.load import PROJECTOR
    except ImportError:
        return ""
    if not PROJECTOR.exists():
        return ""
    try:
        explainer = VLMExplainer.from_pretrained(quiet=True)
    except ImportError:
        return ""
    png, said = vlm_figure(explainer, out)
    return (
        "<section><h2>Vision–language: why did the model say \"zebra\"? (attngrad's LLaVA <b>stand-in</b>: "
        "ViT-Ti + SmolLM2-135M with a projector trained on 1000 images, not LLaVA)</h2>"
        f"<p>Question: <i>{html.escape(QUESTION)}</i> Greedy answer: <b>{html.escape(said.strip())}</b>. "
        "Columns: the answer token explained (its logit), then zebra against elephant (the difference of the "
        "two logits). Rows: <b>language</b> reading (the language model's rollout at the image tokens) and "
        "<b>vision</b> reading (that carried back through the ViT's own rollout). complete: red supports the "
        "answer, blue opposes it.</p>"
        f"<img src='{png.name}' alt='el1 explained for zebra and elephant'></section>"
    )
