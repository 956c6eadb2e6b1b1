"""Commands ``explain-text`` and ``text-deletion`` (BERT-family text models, :mod:`attngrad.text`)."""

from __future__ import annotations

import sys
import warnings

import click
from tqdm import tqdm

from ..losses import LOSSES
from . import main
from .common import (
    device_option,
    method_options_option,
    methods_option,
    model_option,
    out_dir,
    out_option,
    write_method_options,
)


def _text_explainer(model: str | None, device: str | None):
    from ..text import TextExplainer

    return TextExplainer.from_pretrained(model, device=device)


def _model_options(fn):
    fn = device_option()(fn)
    return model_option("BERT-family model folder (default: all-MiniLM-L6-v2 from attngrad[text]).", default=None)(fn)


@main.command("explain-text")
@click.argument("texts", nargs=-1, required=True)
@click.option("--against", "-a", multiple=True, help="Similarity: the text to compare with (one for all, or one per TEXT).")
@click.option("--labels", default=None, help="Zero-shot: label descriptions, comma-separated ('sports,finance,repair').")
@_model_options
@method_options_option("method")
@methods_option("--method", "-m", help="Method(s), comma-separated")
@click.option("--target", "-t", default=None, help="Label name, index or topK (default: top1).")
@click.option("--contrast", "-c", default=None, help="Second label for two-class losses (e.g. top2, the runner-up).")
@click.option("--loss", "-l", default="logit", show_default=True, help=f"One of {', '.join(LOSSES)}.")
@click.option("--start-layer", default=0, show_default=True, type=click.IntRange(min=0), help="First layer of the rollout product.")
@out_option("attngrad-text")
@click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1), help="Texts per forward/backward pass.")
@click.option("--color/--no-color", default=None, help="Colour the terminal view (default: when printing to a terminal).")
def explain_text(texts, against, labels, model, device, method, target, contrast, loss, start_layer, out, batch_size, color,
                 method_options):
    """Explain TEXTS word by word with a classifier, a similarity (--against) or zero-shot labels (--labels).

    Prints each text coloured (signed methods such as complete: red supports, blue opposes;
    unsigned ones such as gae and rollout: red = magnitude) and writes OUT/explanation.html and
    OUT/scores.json (raw token and word scores).

    Example: attngrad explain-text "the cat sat on the mat" --against "a dog on a rug"
    """
    from ..text import TruncationWarning, save_html, save_json, terminal
    from ..text.display import describe

    explainer = _text_explainer(model, device)
    methods = method
    colour = sys.stdout.isatty() if color is None else color
    partners = list(against) if against else None
    if partners and len(partners) not in (1, len(texts)):
        raise click.UsageError(f"{len(partners)} --against texts for {len(texts)} texts; give one, or one per text")
    results = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="explaining", unit="batch", disable=len(starts) < 2):
        batch = list(texts[start : start + batch_size])
        part = None if partners is None else partners if len(partners) == 1 else partners[start : start + batch_size]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncationWarning)
            found = explainer.explain_methods(batch, methods, target=target, loss=loss, contrast=contrast,
                                              start_layer=start_layer, against=part, labels=labels,
                                              options=method_options)
        for w in caught:
            click.echo(f"attngrad: warning: {w.message}", err=True)
        results.extend(found.values())
        for res in found.values():
            for i, text in enumerate(res.texts):
                click.echo(f"[{describe(res, i)}]")
                click.echo("  " + terminal(text, res.words(i), colour))
                if res.reverse is not None:
                    click.echo("  B: " + terminal(res.reverse.texts[i], res.reverse.words(i), colour))
    folder = out_dir(out)
    save_html(folder / "explanation.html", results)
    save_json(folder / "scores.json", results)
    if method_options:
        write_method_options(folder, methods, method_options)
    click.echo(f"wrote {folder / 'explanation.html'} and {folder / 'scores.json'}")


@main.command("text-deletion")
@_model_options
@methods_option("--method", "-m", default="complete,gae,rollout,random", help="Methods, comma-separated")
@click.option("--pairs", "limit", default=0, show_default=True, type=click.IntRange(min=0),
              help="Use only the first N of the 240 pairs (0: all).")
@click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1), help="Pairs per explanation pass.")
@click.option("--lowest-first", is_flag=True, help="Remove the lowest-scored tokens first (negative direction).")
@out_option("attngrad-text-deletion")
def text_deletion(model, device, method, limit, batch_size, lowest_first, out):
    """Token-deletion test on the built-in sentence pairs: similarity curves, AUC table, CSV + JSON."""
    from ..text.deletion import run_deletion, sentence_pairs

    explainer = _text_explainer(model, device)
    pairs = sentence_pairs()
    result = run_deletion(explainer, pairs[:limit] if limit else pairs, method, batch_size=batch_size,
                          lowest_first=lowest_first)
    click.echo(result.table())
    click.echo(f"wrote {result.save(out)} ({result.pairs} pairs)")
