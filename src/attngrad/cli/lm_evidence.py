"""Command ``evaluate lm-evidence``: do language-model explanations point at the fact that answers?"""

from __future__ import annotations

from pathlib import Path

import click

from .evaluate import evaluate, lm_test_methods, lm_test_model, lm_test_run


@evaluate.command("lm-evidence")
@lm_test_methods("Leave the first token (the attention sink) out of every metric.")
@click.option("--prompts", "-n", "count", default=200, show_default=True, type=click.IntRange(min=1),
              help="Prompts to keep (the first ones the model answers).")
@click.option("--candidates", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Seeded prompts generated to choose them from.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the prompt generator.")
@lm_test_run("Continue the run stored in --out (valid shards are kept).")
@lm_test_model()
def lm_evidence(methods, loss, contrast, skip_first, count, candidates, seed, out, resume, batch_size, model, device):
    """In-context evidence test: seeded prompts with several facts and a question about one
    ("Ben lives in" -> " Lima"); per method, the share of positive score on the answering fact,
    whether the top tokens lie in it, and (signed methods) the distractors' share of negative score.

    Writes settings.json, prompts.json, shards/, per_prompt.npz, results.json, results.md to OUT.
    """
    from tqdm import tqdm

    from ..lm import LMExplainer
    from ..lm.evidence import EvidenceSettings, check_out, run_evidence

    settings = EvidenceSettings(methods, loss=loss, contrast=contrast, skip_first=skip_first, prompts=count,
                                candidates=candidates, seed=seed, batch_size=batch_size,
                                model=str(model or "SmolLM2-135M-Instruct"))
    check_out(out, settings, resume=resume)  # before the model loads
    explainer = LMExplainer.from_pretrained(model, device=device)
    bar = tqdm(total=0, unit="batch", desc="lm-evidence", disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    summary = run_evidence(explainer, out, settings, resume=resume, progress=progress)
    bar.close()
    click.echo(f"{summary['prompts']} prompts kept, methods {', '.join(settings.methods)}, loss {settings.loss}")
    if summary["prompts"] < count:
        click.echo(f"attngrad: warning: only {summary['prompts']} of the {count} prompts asked for are answered by the "
                   f"model among {candidates} candidates; give more --candidates", err=True)
    click.echo(Path(out, "results.md").read_text())
    click.echo(f"wrote settings.json, prompts.json, shards/, per_prompt.npz, results.json, results.md to {out}")


@evaluate.command("lm-insertion")
@lm_test_methods("Leave the first token out of the ranking: it is always shown.")
@click.option("--reviews", default=100, show_default=True, type=click.IntRange(min=0), help="Review prompts in the set (after 104 factual ones, interleaved).")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Use the first N prompts of the set.")
@lm_test_run("Continue the run stored in --out (a larger --limit extends it).")
@click.option("--eval-batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Restored prompts per forward pass.")
@lm_test_model()
def lm_insertion(methods, loss, contrast, skip_first, reviews, limit, out, resume, batch_size, eval_batch_size, model,
                 device):  # fmt: skip
    """Token-insertion test on lm-deletion's prompts: restore the prompt's tokens into a neutral prompt
    (every token a space) most / least important first (0-100 %), record the target token's
    log-probability, AUC per method. Writes settings.json, shards/, results.json, results.md, curves.csv to OUT.
    """
    from tqdm import tqdm

    from ..lm import LMExplainer
    from ..lm.deletion import DeletionSettings, check_out
    from ..lm.insertion import run_insertion
    from ..lm.prompts import deletion_prompts

    settings = DeletionSettings(methods, loss=loss, contrast=contrast, skip_first=skip_first,
                                batch_size=batch_size, model=str(model or "SmolLM2-135M-Instruct"))
    check_out(out, settings, resume=resume)  # before the model loads
    prompts = deletion_prompts(reviews)[:limit]
    explainer = LMExplainer.from_pretrained(model, device=device)
    click.echo(f"{len(prompts)} prompts, methods {', '.join(settings.methods)}, loss {settings.loss}")
    bar = tqdm(total=0, unit="batch", desc="lm-insertion", disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    run_insertion(explainer, prompts, out, settings, resume=resume, eval_batch_size=eval_batch_size, progress=progress)
    bar.close()
    click.echo(Path(out, "results.md").read_text())
    click.echo(f"wrote settings.json, shards/, results.json, results.md, curves.csv to {out}")
