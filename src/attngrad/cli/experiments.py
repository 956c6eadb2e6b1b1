"""Commands ``detail``, ``transfer``, ``rewrite`` and ``reproduce``: the paper's experiments."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import numpy as np

from ..errors import AttngradError
from ..experiments.guidance import IMAGE_SUFFIXES
from ..io import resolve_image_path
from . import main
from .common import FOLDER, IMAGE, IMAGES_HELP, FiniteRange, model_options, out_dir, out_option, require_classes, safe_name, split_classes


@main.command(epilog=IMAGES_HELP)
@click.argument("image", type=IMAGE)
@model_options
@click.option("-k", default=3, show_default=True, type=click.IntRange(min=2),
              help="Compare the top-1 class with the next k-1 predictions.")
@click.option("--target", "-t", default=None, help="The class explained (default: the prediction).")
@click.option("--contrast", "-c", "contrasts", multiple=True, help="Contrast class(es), instead of the runners-up; repeatable.")
@click.option("--loss", "-l", default="normdiff", show_default=True, help="normdiff (eq. 8), diff or ratio.")
@click.option("--gallery", default=None, type=FOLDER, help="Folder of <wnid>_<class>.jpg typical images (default: ImageNet sample).")
@out_option("attngrad-detail")
def detail(image, explainer, k, target, contrasts, loss, gallery, out):
    """Detail interpretation of IMAGE: its top class against each runner-up (normdiff, eq. 8).

    Red: details that push the model to the top class; blue: to the contrast class.
    Writes OUT/<image>_detail.png (with a typical image of every class) and one .npy per contrast."""
    from ..experiments.detail import detail_interpretation

    others = split_classes(contrasts, explainer.labels)
    if contrasts and not others:
        raise AttngradError(f"--contrast {contrasts[0]!r} names no class; give a class name or index")
    res = detail_interpretation(explainer, image, k, target, others or None, loss, gallery)
    folder = out_dir(out)
    stem = safe_name(Path(image).stem)
    for j, name in enumerate(res.contrasts):
        np.save(folder / f"{stem}_{safe_name(res.target)}_vs_{safe_name(name)}.npy", res.maps[j].detach().cpu().numpy())
        click.echo(f"{res.target} ({res.probabilities[res.target]:.3f}) vs {name} ({res.probabilities[name]:.3f})")
    click.echo(f"wrote {res.save_figure(folder / f'{stem}_detail.png')}")


@main.command(epilog=IMAGES_HELP)
@click.argument("image", type=IMAGE)
@model_options
@click.option("--target", "-t", default=None, help="Class whose logit is descended (default: the prediction).")
@click.option("--opposing", default=None, help="The other class (default: the strongest other class).")
@click.option("--steps", default=12, show_default=True, type=click.IntRange(min=1, max=10_000), help="Number of updates.")
@click.option("--lr", default=4e-4, show_default=True, type=FiniteRange(min=0, min_open=True, max=1),
              help="Learning rate (the paper's 0.0004).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@out_option("attngrad-transfer")
def transfer(image, explainer, target, opposing, steps, lr, optimizer, out):
    """Attention transfer on IMAGE: learn every layer's attention map (weights frozen) to lower the
    target logit; re-explain with `complete` after each step.

    Writes OUT/<image>_transfer.{png,gif,csv} and a curve of the logits and the opposing share."""
    from ..experiments.transfer import attention_transfer

    res = attention_transfer(explainer, image, target, opposing, steps, lr, optimizer, progress=True)
    first, last = res.steps[0], res.steps[-1]
    click.echo(f"override reproduces the logits: max difference {res.reproduction_error:g}")
    for s in (first, last):
        click.echo(
            f"step {s.step}: {res.target} {s.target_logit:.3f}, {res.opposing} {s.opposing_logit:.3f}, "
            f"positive mass on {res.opposing}: {s.opposing_share:.3f}"
        )
    paths = res.save(out_dir(out), f"{safe_name(Path(image).stem)}_transfer")
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def _images_in(paths: tuple[str, ...], limit: int | None) -> list[str]:
    """Expand folders into their image files (sorted); keep files as given; with ``limit``, keep that
    many spread evenly over the list (a folder sorted by class gives a spread of classes)."""
    files: list[str] = []
    for p in paths:
        path = resolve_image_path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise AttngradError(f"{path}: no image files in the folder")
            files.extend(found)
        else:
            files.append(str(path) if path.exists() else p)
    if limit and limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


@main.command(epilog=IMAGES_HELP)
@click.argument("images", nargs=-1, required=True)
@model_options
@click.option("--to", "to", required=True, help="Class to reach, or 'random' (a random other class per image).")
@click.option("--from", "from_", default=None, help="Class to leave (default: the prediction).")
@click.option("--eps", default=2.0, show_default=True, type=FiniteRange(min=0, min_open=True, max=255),
              help="L-inf budget in 8-bit levels (2 = 2/255).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=1, max=10_000), help="At most this many one-level updates.")
@click.option("--probability", "-p", default=0.9, show_default=True, type=FiniteRange(min=0, max=1),
              help="Stop when --to is top-1 with this probability.")
@click.option("--loss", default="margin", show_default=True, help="margin, diff (the paper's), normdiff or xent.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Batch mode: this many images, spread evenly over the list.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed for --to random.")
@click.option("--batch-size", "-b", default=16, show_default=True, type=click.IntRange(min=1), help="Images per forward/backward pass.")
@out_option("attngrad-rewrite")
def rewrite(images, explainer, to, from_, eps, steps, probability, loss, limit, seed, batch_size, out):
    """Class rewriting: change IMAGES (files or a folder) imperceptibly until --to is the top-1 class.

    One image: writes the rewritten PNG, the amplified difference, a before/after picture with the
    `complete` maps of both classes, and a JSON of the numbers. Several (batch mode): the rewritten
    PNGs, results.csv and summary.json (success rate, median L-inf / PSNR)."""
    from tqdm import tqdm

    from ..experiments.rewrite import batch_summary, random_targets, rewrite_batch, save_rewrite

    files = _images_in(images, limit)
    folder = out
    rng = np.random.default_rng(seed)
    results = []
    batches = range(0, len(files), batch_size)
    for start in tqdm(batches, desc="rewriting", unit="batch", disable=len(batches) < 2):
        chunk = files[start : start + batch_size]
        targets = random_targets(explainer, chunk, rng) if to == "random" else to
        results += rewrite_batch(
            explainer, chunk, targets, from_, eps / 255, steps, probability, loss, progress=len(files) == 1
        )
    if len(results) == 1:
        click.echo(results[0].summary())
        paths = save_rewrite(explainer, results[0], out_dir(folder), f"{safe_name(Path(files[0]).stem)}_to_{safe_name(results[0].to_class)}")
        click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
        return
    rows = []
    out_dir(folder)
    for r in results:
        r.rewritten.save(folder / f"{safe_name(Path(r.source).stem)}_to_{safe_name(r.to_class)}.png")
        numbers = r.numbers()
        rows.append({k: v for k, v in numbers.items() if not k.endswith("top5")})
    with (folder / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = batch_summary(results)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    click.echo(json.dumps(summary))


@main.command()
@model_options
@out_option("attngrad-report")
@click.option("--gallery", default=None, type=FOLDER, help="Folder of <wnid>_<class>.jpg images (default: ImageNet sample).")
@click.option("--batch-images", default=8, show_default=True, type=click.IntRange(min=0),
              help="Random images for the batch-rewriting table (0: skip).")
def reproduce(explainer, out, gallery, batch_images):
    """Regenerate the equivalent of each of the paper's figures on the model into OUT/report.html."""
    from ..cases import CASES
    from ..experiments.report import DETAIL_CASES, MULTI, build_report

    named = [c for table in (CASES, MULTI) for classes in table.values() for c in classes]
    detail = [c for _, target, contrasts in DETAIL_CASES for c in [target, *(contrasts or [])] if c is not None]
    require_classes(explainer.labels, [*named, *detail], "reproduce")
    click.echo(f"report written: {build_report(explainer, out, gallery, batch_images=batch_images)}")
