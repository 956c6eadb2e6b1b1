"""Command ``evaluate grid``: the grid pointing game (does a map find the explained class's cell?)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import AttngradError
from ..methods import METHODS
from .common import FiniteRange, OutDir, device_option, method_options_option, methods_option, model_option
from .evaluate import evaluate

#: Default methods: the rollout family, the last-layer baselines, the LRP family and random (the cheap ones).
DEFAULT = "complete,gae,absolute,rollout,raw_attention,attn_gradcam,tattr,partial_lrp,random"


@evaluate.command("grid")
@click.option("--data", required=True, type=click.Path(), help="Folder of <wnid>_<name>.jpg images or of class sub-folders.")
@click.option("--labels", "table", default=None, type=click.Path(), help="Class table TSV (index, wnid, name); default: imagenet_classes.tsv next to the data.")
@click.option("--image-labels", default=None, type=click.Path(), help="CSV/TSV of file name, class per image.")
@method_options_option("methods")
@methods_option("--methods", default=DEFAULT, registry=[*METHODS, "gradeclip", "attention_eclip"], kind="an image model")
@click.option("--n", "n", default=2, show_default=True, type=click.IntRange(2, 8), help="Grid side: n x n cells.")
@click.option("--grids", "count", default=250, show_default=True, type=click.IntRange(1, 100_000), help="Grids drawn.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the grid drawing.")
@click.option("--min-confidence", default=0.5, show_default=True, type=FiniteRange(0.0, 1.0, min_open=True),
              help="An image qualifies when classified correctly alone at cell resolution with this probability.")
@click.option("--clip", "clip", is_flag=True,
              help="Explain a CLIP image tower (--model: a CLIPModel; default: the shipped LiT-style stand-in) for "
                   "'a photo of a {class}' of each cell; qualification is zero-shot over every class's text.")
@click.option("--blank", is_flag=True, help="Control: the last cell is a mid-grey blank (not explained); reports the share on it.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Use the first N labelled images.")
@click.option("--out", "-o", required=True, type=OutDir(), help="Results folder.")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out (valid shards are kept).")
@click.option("--batch-size", "-b", default=4, show_default=True, type=click.IntRange(1, 100_000),
              help="Grids per explanation pass (each explains all its cells; unit of resumption).")
@model_option(default=None, help="Hugging Face folder or Hub name, or timm:NAME (default: shipped ViT-Ti).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None, help="Weights file for a timm:NAME model.")
@device_option()
def grid(data, table, image_labels, methods, n, count, seed, min_confidence, clip, blank, limit, out, resume,
         batch_size, model, checkpoint, device, method_options):
    """Grid pointing game (Böhle et al. 2021; Rao et al. 2022): n x n grids of confidently classified
    images of different classes; each cell's class is explained on the whole grid and scored by the
    share of positive attribution inside that cell (chance 1/n²); signed maps also by the share of
    negative attribution on the other cells. Runs under torchrun like `evaluate perturbation`.

    Writes run.json, shards/, per_cell.npz, results.json, results.md and (not with --clip) grids.png to OUT.
    """
    from ..evaluation.data import discover
    from ..evaluation.distributed import dist_info, init_distributed
    from ..evaluation.grid import GridSettings, run_grid
    from ..explainer import Explainer
    from ..models import load_model

    if clip and methods == DEFAULT.split(","):
        methods = ["complete", "gae", "absolute", "rollout", "raw_attention", "attn_gradcam", "gradeclip"]
    settings = GridSettings(methods, n=n, count=count, seed=seed, min_confidence=min_confidence, blank=blank,
                            batch_size=batch_size, resume=resume, clip=clip, method_options=method_options)
    settings.check()  # before the model loads
    if resume and not Path(out, "run.json").is_file():
        raise AttngradError(f"--resume: {out} holds no run to continue (no run.json); leave out --resume to start one")
    if clip and checkpoint is not None:
        raise AttngradError("--checkpoint loads timm weights; with --clip give the CLIP model with --model")
    device = init_distributed(device)
    if clip:
        from ..clip import ClipExplainer
        from ..evaluation.grid import ClipTower
        from ..models.timm_vit import imagenet_labels

        explainer = ClipTower(ClipExplainer.from_pretrained(model, device=device), imagenet_labels())
    else:
        explainer = Explainer(load_model(model, device=device, checkpoint=checkpoint))
    dataset = discover(data, explainer.labels, table, limit, image_labels)
    summary = run_grid(explainer, dataset, out, settings)
    if summary is not None and dist_info()[0] == 0:
        click.echo(Path(out, "results.md").read_text())
        picture = "" if clip else ", grids.png"
        click.echo(f"wrote run.json, shards/, per_cell.npz, results.json, results.md{picture} to {out}")
