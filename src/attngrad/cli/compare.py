"""Command ``compare``: the comparison grid (rows: classes, columns: methods)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import viz
from ..compare import comparison_grid
from ..errors import AttngradError
from ..io import load_image
from ..losses import LOSSES
from . import main
from .common import (
    IMAGE,
    IMAGES_HELP,
    method_options_option,
    methods_option,
    model_options,
    out_dir,
    out_option,
    safe_name,
    split_classes,
    write_method_options,
)


@main.command(epilog=IMAGES_HELP)
@click.argument("image", type=IMAGE)
@method_options_option("methods")
@model_options
@click.option("--targets", "-t", multiple=True, default=("top1,top2",), show_default=True,
              help="Classes (names, indices or topK): a comma list, or repeat the option.")
@methods_option("--methods", "-m", default="all", help="Methods, comma-separated, or 'all'")
@click.option("--loss", "-l", default="logit", show_default=True, help=f"One of {', '.join(LOSSES)}.")
@out_option("attngrad-out")
def compare(image, explainer, targets, methods, loss, out, method_options):
    """Explain IMAGE for each class in --targets with each method in --methods and write
    one grid PNG (rows: classes, columns: methods) to OUT/<image>_compare.png.

    Example: attngrad compare el1 -t zebra -t "African elephant" -m gae,complete,absolute
    """
    if LOSSES.get(loss) is not None and LOSSES[loss].needs_contrast:
        raise AttngradError(f"compare explains each class by its own logit; loss {loss!r} needs a contrast class, which "
                            f"compare has not: use 'attngrad explain IMAGE -l {loss} -t CLASS -c CLASS'")
    picture = load_image(image)
    fig = comparison_grid(explainer, picture, split_classes(targets, explainer.labels), methods, loss,
                          options=method_options)
    path = viz.save_figure(fig, out_dir(out) / f"{safe_name(Path(image).stem)}_compare.png")
    if method_options:
        write_method_options(out, methods, method_options)
    click.echo(f"wrote {path}")
