"""Command ``evaluate lm-evidence``: do language-model explanations point at the fact that answers?"""

from __future__ import annotations

from pathlib import Path

import click

from ..lm.attribution import LM_METHODS
from .common import OutDir, device_option, methods_option, model_option
from .evaluate import evaluate


@evaluate.command("lm-evidence")
@methods_option("--methods", default="complete,gae,raw_attention,grad_x_input,random", registry=LM_METHODS,
                kind="a language model", help="Language-model methods, comma-separated, or 'all'")
@click.option("--loss", "-l", type=click.Choice(["logit", "diff", "normdiff"]), default="logit", show_default=True,
              help="Loss the maps explain; diff / normdiff against --contrast.")
@click.option("--contrast", "-c", default=None, help="Contrast of diff / normdiff: 'runner-up' (default), a token text or topK.")
@click.option("--skip-first", is_flag=True, help="Leave the first token (the attention sink) out of every metric.")
@click.option("--prompts", "-n", "count", default=200, show_default=True, type=click.IntRange(min=1),
              help="Prompts to keep (the first ones the model answers).")
@click.option("--candidates", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Seeded prompts generated to choose them from.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the prompt generator.")
@click.option("--out", "-o", required=True, type=OutDir(), help="Results folder.")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out (valid shards are kept).")
@click.option("--batch-size", "-b", default=8, show_default=True, type=click.IntRange(min=1),
              help="Prompts per explanation pass (unit of resumption).")
@model_option(default=None, help="Causal LM folder or Hub name (default: SmolLM2-135M-Instruct from attngrad[lm]).")
@device_option()
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
    click.echo(Path(out, "results.md").read_text())
    click.echo(f"wrote settings.json, prompts.json, shards/, per_prompt.npz, results.json, results.md to {out}")


@evaluate.command("lm-insertion")
@methods_option("--methods", default="complete,gae,raw_attention,grad_x_input,random", registry=LM_METHODS,
                kind="a language model", help="Language-model methods, comma-separated, or 'all'")
@click.option("--loss", "-l", type=click.Choice(["logit", "diff", "normdiff"]), default="logit", show_default=True,
              help="Loss the maps explain; diff / normdiff against --contrast.")
@click.option("--contrast", "-c", default=None, help="Contrast of diff / normdiff: 'runner-up' (default), a token text or topK.")
@click.option("--skip-first", is_flag=True, help="Leave the first token out of the ranking: it is always shown.")
@click.option("--reviews", default=100, show_default=True, type=click.IntRange(min=0), help="Review prompts in the set (after 104 factual ones, interleaved).")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Use the first N prompts of the set.")
@click.option("--out", "-o", required=True, type=OutDir(), help="Results folder.")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out (a larger --limit extends it).")
@click.option("--batch-size", "-b", default=8, show_default=True, type=click.IntRange(min=1), help="Prompts per explanation pass (unit of resumption).")
@click.option("--eval-batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Restored prompts per forward pass.")
@model_option(default=None, help="Causal LM folder or Hub name (default: SmolLM2-135M-Instruct from attngrad[lm]).")
@device_option()
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
