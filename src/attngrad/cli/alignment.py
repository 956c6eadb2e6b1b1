"""Command ``evaluate alignment``: encoder-decoder maps against the known word alignment of a synthetic task."""

from __future__ import annotations

import json

import click

from ..evaluation.alignment import METHODS
from .common import OutDir, device_option, methods_option, model_option, out_dir
from .evaluate import evaluate


@evaluate.command("alignment")
@methods_option("--methods", default=",".join(METHODS), registry=METHODS, kind="the alignment evaluation",
                help="Methods, comma-separated, or 'all'")
@click.option("--loss", "-l", type=click.Choice(["logit", "logprob"]), default="logit", show_default=True,
              help="What the maps explain: the target token's logit or its log-probability.")
@click.option("--sentences", "-n", "count", default=500, show_default=True, type=click.IntRange(min=1),
              help="Held-out sentences of the synthetic task to evaluate.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the sentence generator (and of the random baseline).")
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=10, max=100_000),
              help="Bootstrap resamples of sentences for the 95 % intervals.")
@click.option("--batch-size", "-b", default=16, show_default=True, type=click.IntRange(min=1),
              help="Sentences per explanation pass (each brings one row per target token).")
@click.option("--out", "-o", required=True, type=OutDir(), help="Results folder.")
@model_option(default=None, help="Model folder trained on the synthetic task (default: the shipped synthetic-task model).")
@device_option()
def alignment(methods, loss, count, seed, bootstrap, batch_size, out, model, device):
    """Alignment error rate (Och & Ney 2003), pointing accuracy and, for signed methods, the negative
    share on unrelated tokens of each method's source map, for every target token of held-out
    sentences of attngrad's synthetic translation task (the source words behind each target word
    are known by construction; one target word depends on two distant source words).

    Writes results.json, results.md, per_token.npz and examples.png to OUT.
    """
    import numpy as np

    from ..evaluation import alignment as core
    from ..seq2seq import Seq2SeqExplainer, synthetic

    explainer = Seq2SeqExplainer.from_pretrained(model, device=device)
    pairs = synthetic.sample(count, seed=seed, held_out=True)
    tokens = core.score_tokens(explainer, pairs, methods, batch_size=batch_size, seed=seed, loss=loss)
    summary = core.summarize(tokens, bootstrap=bootstrap, seed=seed)
    summary = {"model": str(model) if model else synthetic.MODEL_LABEL, "seed": seed, "loss": loss, **summary}
    folder = out_dir(out)
    (folder / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "results.md").write_text(core.markdown(summary))
    np.savez_compressed(folder / "per_token.npz", sentence=tokens.sentence, position=tokens.position,
                        kind=tokens.kinds, gold=tokens.gold, valid=tokens.valid,
                        sources=np.array([p.source for p in pairs]), targets=np.array([p.target for p in pairs]),
                        **{f"scores_{m}": s for m, s in tokens.scores.items()})
    core.save_examples(folder / "examples.png", pairs, tokens, core.pick_examples(pairs))
    click.echo(core.markdown(summary))
    click.echo(f"wrote {folder}/results.json, results.md, per_token.npz, examples.png")
