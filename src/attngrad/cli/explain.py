"""Commands ``explain``, ``predict``, ``classes`` and ``demo``."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .. import viz
from ..errors import AttngradError
from ..experiments.guidance import LAYOUTS
from ..io import load_image
from ..losses import LOSSES, check_loss_is_read
from ..methods import is_signed
from ..targets import resolve_targets
from . import main
from .common import (
    FOLDER,
    IMAGES_HELP,
    MODEL_HELP,
    class_names,
    method_options_option,
    methods_option,
    model_option,
    model_options,
    out_dir,
    out_option,
    require_classes,
    safe_name,
    split_classes,
    write_method_options,
)


def _load_all(paths: tuple[str, ...]) -> tuple[list[tuple[str, Image.Image]], list[str]]:
    """Load every image; failures become messages and the image is skipped.

    One image that cannot be read is the error itself; when none of several can be read, the
    command stops before any model work.
    """
    if len(paths) == 1:
        return [(paths[0], load_image(paths[0]))], []
    good: list[tuple[str, Image.Image]] = []
    failed: list[str] = []
    for p in paths:
        try:
            good.append((p, load_image(p)))
        except AttngradError as err:
            failed.append(str(err))
            click.echo(f"attngrad: skipped: {err}", err=True)
    if not good:
        raise AttngradError(f"none of the {len(paths)} images could be read (see above)")
    return good, failed


def _print_top5(name: str, preds) -> None:
    click.echo(f"{name}: " + ", ".join(f"{p.label} {p.probability:.3f}" for p in preds))


@main.command(epilog=IMAGES_HELP)
@click.argument("images", nargs=-1, required=True)
@method_options_option("method")
@model_options
@methods_option("--method", "-m")
@click.option("--target", "-t", "targets", multiple=True,
              help="Class name, index or topK; repeat the option or give a comma list for several (default: top1).")
@click.option("--contrast", "-c", default=None, help="Second class for two-class losses (normdiff, diff, ratio).")
@click.option("--loss", "-l", default="logit", show_default=True, help=f"One of {', '.join(LOSSES)}.")
@click.option("--start-layer", default=0, show_default=True, type=click.IntRange(min=0), help="First layer of the rollout product.")
@click.option("--token", default="cls", show_default=True, help="Special token whose row is read (cls, distillation).")
@out_option("attngrad-out")
@click.option("--batch-size", "-b", default=16, show_default=True, type=click.IntRange(min=1), help="Images per forward/backward pass.")
@click.option("--guide", "-g", default=None, help="External guidance: an image or a class name (e.g. zebra) stitched beside each image.")
@click.option("--gallery", default=None, type=FOLDER, help="Folder of <wnid>_<class>.jpg images for --guide CLASS (default: ImageNet sample).")
@click.option("--layout", default="left-right", show_default=True, type=click.Choice(list(LAYOUTS)),
              help="Where the original goes in the stitched input.")
def explain(images, explainer, method, targets, contrast, loss, start_layer, token, out, batch_size, guide, gallery, layout,
            method_options):
    """Explain IMAGES: print top-5 predictions; write an overlay PNG and the raw map (.npy)
    per image x method x target into OUT/<image>/<method>_<target>.{png,npy}.
    With --guide, the map is of the original's half of the stitched input (plus *_stitched.png).

    Example: attngrad explain el1 -m complete,gae -t zebra,"African elephant"

    Method options: attngrad explain el1 -m ig --method-option ig.layer=hidden:3 --method-option ig.steps=8
    (OUT/method_options.json records them).
    """
    methods = method
    check_loss_is_read(methods, loss, contrast)
    wanted = split_classes(targets, explainer.labels)
    if targets and not wanted:
        raise AttngradError(f"--target {targets[0]!r} names no class; give a class name, index or topK")
    wanted = wanted or ["top1"]
    scores = torch.zeros(1, len(explainer.labels))
    for spec in [*wanted, *([contrast] if contrast is not None else [])]:
        resolve_targets(spec, scores, explainer.labels)  # an unknown class is refused before any pass
    loaded, failed = _load_all(images)
    written = 0
    batches = [loaded[i : i + batch_size] for i in range(0, len(loaded), batch_size)]
    for batch in tqdm(batches, desc="explaining", unit="batch", disable=len(batches) < 2):
        paths, pils = zip(*batch)
        for p, preds in zip(paths, explainer.predict(list(pils))):
            _print_top5(p, preds)
        for target in wanted:
            results = explainer.explain_methods(
                list(pils), methods, target=target, loss=loss, contrast=contrast, start_layer=start_layer,
                token=token, guide=guide, layout=layout, gallery=gallery, options=method_options,
            )
            for name, res in results.items():
                for i, p in enumerate(paths):
                    label = res.target_names[i]
                    if res.contrasts is not None:
                        label += f"_vs_{res.contrast_names[i]}"
                    folder = out_dir(out / safe_name(Path(p).stem))
                    stem = folder / f"{name}_{safe_name(label)}"
                    np.save(stem.with_suffix(".npy"), res.maps[i].detach().cpu().numpy())
                    viz.save_overlay(stem.with_suffix(".png"), res.images[i], res.maps[i], f"{name}: {label}",
                                      signed=is_signed(name))
                    if guide is not None:
                        viz.save_overlay(f"{stem}_stitched.png", res.stitched_images[i], res.full_maps[i],
                                         f"{name}: {label}", signed=is_signed(name))  # fmt: skip
                    written += 1
    if method_options:
        write_method_options(out, methods, method_options)
    click.echo(f"wrote {written} map{'s' if written != 1 else ''} to {out}")
    if failed:
        raise AttngradError(f"{len(failed)} of {len(images)} images could not be read (see above)")


@main.command(epilog=IMAGES_HELP)
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("-k", default=5, show_default=True, type=click.IntRange(min=1), help="How many classes to show.")
def predict(images, explainer, k):
    """Print the top-k predictions for IMAGES."""
    loaded, failed = _load_all(images)
    for p, img in loaded:
        _print_top5(p, explainer.predict(img, k=k)[0])
    if failed:
        raise AttngradError(f"{len(failed)} of {len(images)} images could not be read (see above)")


@main.command()
@model_option(MODEL_HELP, default=None)
@click.option("--search", "-s", default=None, help="Only classes whose name contains this text.")
def classes(model, search):
    """List the model's class indices and names (read from its configuration; no weights are loaded)."""
    for i, label in enumerate(class_names(model)):
        if search is None or search.lower() in label.lower():
            click.echo(f"{i}\t{label}")


@main.command()
@model_options
@out_option("attngrad-demo")
@click.option("--multiclass", type=click.Path(exists=True, file_okay=False), default=None,
              help="Also compare the methods on the images of this folder (e.g. ../shared/data/multiclass).")
def demo(explainer, out, multiclass):
    """Write the demo gallery (el1: elephant + zebra, catdog: dog + cat; gae / complete / absolute),
    and compare.html: the paper's Figure 13 methods side by side."""
    from ..demo import CASES, build_demo

    require_classes(explainer.labels, [c for classes in CASES.values() for c in classes], "demo")
    index = build_demo(explainer, out, multiclass=multiclass)
    click.echo(f"demo written: {index}")
