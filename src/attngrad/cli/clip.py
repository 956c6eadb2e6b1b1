"""Command ``explain-clip``: image–text similarity explained on both towers (:mod:`attngrad.clip`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from ..clip.explainer import CLIP_METHODS
from ..errors import AttngradError
from . import main
from .common import IMAGE, OutDir, device_option, methods_option, model_option, out_dir, safe_name


@main.command("explain-clip")
@click.argument("image", type=IMAGE)
@click.option("--text", "-t", "texts", multiple=True, required=True, help="A text to compare with; repeat for several.")
@methods_option("--method", "-m", "methods", registry=CLIP_METHODS, kind="CLIP towers")
@click.option("--tower", type=click.Choice(["both", "image", "text"]), default="both", show_default=True,
              help="Explain the image tower (maps), the text tower (token scores), or both.")
@model_option(default=None, help="CLIPModel folder or Hub name (default: the offline LiT stand-in).")
@device_option()
@click.option("--start-layer", default=0, show_default=True, type=click.IntRange(min=0), help="First layer of the rollout product.")
@click.option("--out", "-o", default="attngrad-clip", show_default=True, type=OutDir(), help="Output folder.")
@click.option("--color/--no-color", default=None, help="Colour the token scores (default: when printing to a terminal).")
def explain_clip(image, texts, methods, tower, model, device, start_layer, out, color):
    """Explain why IMAGE matches each --text: cos(image, text) on the image tower and the text tower.

    Writes OUT/<image>/<method>_<text>.{png,npy} per text and method (image tower), OUT/<image>/all.png
    (every method x text) and OUT/<image>/text_scores.json (token scores); prints the similarities and
    each text's token scores (red: supports the similarity, blue: opposes).
    """
    from .. import viz
    from ..clip import ClipExplainer
    from ..clip.towers import check_texts
    from ..io import load_image
    from ..text.display import merge_words, terminal

    check_texts(texts)  # before the model loads
    names = [safe_name(t) for t in texts]
    if len(set(names)) != len(names):
        raise AttngradError("two --text values give the same file name; make the texts differ in letters or digits")
    explainer = ClipExplainer.from_pretrained(model, device=device)
    picture = load_image(image)
    texts = list(texts)
    click.echo(f"model: {explainer.model.name}")
    if explainer.model.stand_in:
        click.echo("  (a stand-in for CLIP, trained on 1000 images: a demonstration model, not CLIP)")
    image_results = text_results = {}
    if tower in ("both", "image"):
        image_results = explainer.explain_methods(picture, texts, methods, tower="image", start_layer=start_layer)
    if tower in ("both", "text"):
        text_methods = [m for m in methods if _text_ok(explainer, m)]
        skipped = [m for m in methods if m not in text_methods]
        if not text_methods and tower == "text":  # the one line, without the note before it
            raise AttngradError(f"none of {', '.join(methods)} is defined on this text tower; use complete, gae, absolute or rollout")
        if skipped:
            click.echo(f"attngrad: note: not defined on this text tower, skipped there: {', '.join(skipped)}", err=True)
        if text_methods:
            text_results = explainer.explain_methods(picture, texts, text_methods, tower="text", start_layer=start_layer)
    probs = explainer.zero_shot(picture, texts)[0] if len(texts) > 1 else None
    any_result = next(iter({**image_results, **text_results}.values()))
    for k, text in enumerate(texts):
        line = f"{text!r}: cos = {float(any_result.similarity[0, k]):.4f}"
        if probs is not None:
            line += f", zero-shot p = {float(probs[k]):.3f}"
        click.echo(line)

    folder = out_dir(Path(out) / safe_name(Path(image).stem))
    written = []
    for name, res in image_results.items():
        for k, text in enumerate(texts):
            stem = folder / f"{name}_{safe_name(text)}"
            np.save(stem.with_suffix(".npy"), res.maps[0, k].detach().cpu().numpy())
            viz.save_overlay(stem.with_suffix(".png"), res.images[0], res.maps[0, k], f"{name}: {text}")
            written.append(stem.with_suffix(".png"))
    if image_results:
        shown = next(iter(image_results.values())).images[0]
        rows = [[res.maps[0, k] for k in range(len(texts))] for res in image_results.values()]
        fig = viz.grid([shown] * len(rows), rows, col_titles=["image", *texts], row_titles=list(image_results))
        viz.save_figure(fig, folder / "all.png")
        written.append(folder / "all.png")

    colour = sys.stdout.isatty() if color is None else color
    records = []
    for name, res in text_results.items():
        for k, text in enumerate(texts):
            b = res.batch
            real = len(b.tokens[k])
            words = merge_words(text, b.tokens[k], res.maps[0, k, :real].tolist(), b.word_ids[k], b.offsets[k],
                                b.content[k, :real].tolist())
            click.echo(f"[text tower, {name}] " + terminal(text, words, colour))
            records.append({"text": text, "method": name, "cosine": float(res.similarity[0, k]),
                            "tokens": [{"token": t, "score": s} for t, s in res.token_scores(0, k)],
                            "words": [{"word": w.text, "score": w.score} for w in words]})
    if records:
        (folder / "text_scores.json").write_text(json.dumps({"image": str(image), "model": explainer.model.name,
                                                            "results": records}, indent=1))
        written.append(folder / "text_scores.json")
    click.echo(f"wrote {len(written)} file{'s' if len(written) != 1 else ''} to {folder}")


def _text_ok(explainer, name: str) -> bool:
    from ..clip.explainer import clip_method
    from ..methods import Rollout

    m = clip_method(name)
    if name == "attn_gradcam":
        return False
    return explainer.model.text.read == "token" or isinstance(m, Rollout)
