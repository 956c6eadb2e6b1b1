"""Command ``compare``: the comparison grid (rows: classes, columns: methods)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import viz
from ..compare import comparison_grid
from ..io import load_image
from ..losses import LOSSES
from . import main
from .common import model_options, out_dir, safe_name, split_list


@main.command()
@click.argument("image")
@model_options
@click.option("--targets", "-t", default="top1,top2", show_default=True, help="Classes, comma-separated: names, indices or topK.")
@click.option("--methods", "-m", default="all", show_default=True, help="Methods, comma-separated, or 'all'.")
@click.option("--loss", "-l", default="logit", show_default=True, help=f"One of {', '.join(LOSSES)}.")
@click.option("--out", "-o", default="attngrad-out", show_default=True, help="Output folder.")
def compare(image, explainer, targets, methods, loss, out):
    """Explain IMAGE for each class in --targets with each method in --methods and write
    one grid PNG (rows: classes, columns: methods) to OUT/<image>_compare.png."""
    picture = load_image(image)
    fig = comparison_grid(explainer, picture, [t.strip() for t in targets.split(",") if t.strip()], split_list(methods), loss)
    path = viz.save_figure(fig, out_dir(out) / f"{safe_name(Path(image).stem)}_compare.png")
    click.echo(f"wrote {path}")
