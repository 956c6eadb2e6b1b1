"""Command ``explain-seq2seq``: encoder-decoder models (BART, T5, Marian; :mod:`attngrad.seq2seq`)."""

from __future__ import annotations

import sys
import warnings

import click

from ..errors import AttngradError
from ..losses import LOSSES
from ..seq2seq.explainer import EmptyExplanationWarning
from ..seq2seq.rules import WEIGHTINGS
from . import main
from .common import OutDir, device_option, methods_option, model_option, out_dir


def _position(value: str):
    value = value.strip().lower()
    if value in ("next", "all"):
        return None if value == "next" else "all"
    try:
        return int(value)
    except ValueError:
        raise AttngradError(f"--position {value!r}: give next, all or a target token index (0, 1, ..., -1)",
                            field="position") from None


@main.command("explain-seq2seq")
@click.argument("sources", nargs=-1, required=True)
@model_option(default=None,
              help="AutoModelForSeq2SeqLM folder or Hub name (BART, T5, Marian); default: attngrad's synthetic-task "
                   "model (a made-up language with known alignments, not a real translation model).")
@click.option("--target", "-t", default=None, help="Target text (a translation, a summary) or its beginning.")
@click.option("--position", "-p", default="next", show_default=True,
              help="next: the greedy next token after --target; all: every token of --target; K: target token K.")
@methods_option("--method", "-m", "methods", registry=WEIGHTINGS, kind="cross-attention explanations")
@click.option("--loss", "-l", default="logit", show_default=True, help=f"One of {', '.join(LOSSES)}.")
@click.option("--contrast", "-c", default=None, help="Second token for two-token losses (diff, normdiff, ratio).")
@device_option()
@click.option("--out", "-o", default="attngrad-seq2seq", show_default=True, type=OutDir(), help="Output folder.")
@click.option("--color/--no-color", default=None, help="Colour the terminal view (default: when printing to a terminal).")
def explain_seq2seq(sources, model, target, position, methods, loss, contrast, device, out, color):
    """Explain the token an encoder-decoder model produces, over the SOURCES' tokens and the earlier target tokens.

    Relevance rules of Chefer et al. (ICCV 2021) for self- and cross-attention, weighted by
    the method (complete: signed, red supports, blue opposes). Writes OUT/explanation.html,
    OUT/scores.json and, with --position all, OUT/alignment-METHOD.png.
    """
    from ..losses import check_contrast, get_loss
    from ..seq2seq import Seq2SeqExplainer
    from ..seq2seq.display import save_alignment, save_html, save_json, terminal_lines

    where = _position(position)
    check_contrast(get_loss(loss), contrast, what="token")  # before the model loads
    if target is not None and not target.strip():
        raise AttngradError("--target is empty; give the target text, or leave --target out to explain the model's "
                            "first token", field="target")
    if where is not None and target is None:
        raise AttngradError(f"--position {position} needs --target (the text whose tokens are explained)",
                            field="position")
    if any(not s.strip() for s in sources):
        raise AttngradError("a SOURCE text is empty; give the text to translate or summarise", field="sources")
    explainer = Seq2SeqExplainer.from_pretrained(model, device=device)
    contrast_value = int(contrast) if contrast is not None and contrast.lstrip("-").isdigit() else contrast
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmptyExplanationWarning)
        found = explainer.explain_methods(list(sources), target, methods, position=where, loss=loss,
                                          contrast=contrast_value)
    for w in caught:
        if issubclass(w.category, EmptyExplanationWarning):
            click.echo(f"attngrad: warning: {w.message}", err=True)
    colour = sys.stdout.isatty() if color is None else color
    if model is None:
        from ..seq2seq.synthetic import MODEL_LABEL

        click.echo(f"model: {MODEL_LABEL}; pass --model for a real one")
    for res in found.values():
        for i in range(len(res.sources)):
            for line in terminal_lines(res, i, colour):
                click.echo(line)
    folder = out_dir(out)
    written = [save_html(folder / "explanation.html", list(found.values())),
               save_json(folder / "scores.json", list(found.values()))]
    if where == "all":
        for name, res in found.items():
            starts = [i for i, p in enumerate(res.positions) if p == 0]
            for n, start in enumerate(starts):
                end = starts[n + 1] if n + 1 < len(starts) else len(res.positions)
                suffix = f"-{n + 1}" if len(starts) > 1 else ""
                written.append(save_alignment(folder / f"alignment-{name}{suffix}.png", res, range(start, end)))
    click.echo("wrote " + ", ".join(str(p) for p in written))
