"""Command ``evaluate attribution-error``: how far each baseline-explicit method's attributions sum
from their target ``f(x) - f(x')`` (see :mod:`attngrad.evaluation.attribution_error`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import AttngradError
from ..io import IMAGE_SUFFIXES
from .common import OutDir, device_option, model_option
from .evaluate import evaluate


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AttngradError(f"{option} takes comma-separated whole numbers, such as 1,4,16; not {text!r}") from None
    if not values or any(not 1 <= v <= 4096 for v in values):
        raise AttngradError(f"{option}: each value must be from 1 to 4096, not {text!r}")
    return values


def _names(text: str, option: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise AttngradError(f"{option} is empty; give at least one value")
    return values


def _images(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        raise AttngradError(f"--data {folder}: no such folder of images")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not found:
        raise AttngradError(f"--data {folder}: no images (.jpg, .png, ...) in it")
    return found


def _prompts(path: Path, limit: int) -> list[str]:
    if not path.is_file():
        raise AttngradError(f"--prompts {path}: no such file (one prompt per line)")
    found = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()][:limit]
    if not found:
        raise AttngradError(f"--prompts {path}: no prompts in it (one per line)")
    return found


@evaluate.command("attribution-error")
@click.option("--data", default=None, type=click.Path(path_type=Path), help="Folder of images (an image classifier explains its top class).")
@click.option("--prompts", default=None, type=click.Path(path_type=Path), help="Text file, one prompt per line (a causal LM explains its top next token).")
@click.option("--layers", default="input", show_default=True, help="Comma list of layers: input, hidden:K, attention:K (K from 0; -1 = last).")
@click.option("--baselines", default="zero", show_default=True, help="Comma list: zero, mean, blur (pixels), uniform (attention), pad, mask (text).")
@click.option("--rules", default="riemann_left,trapezoid,gauss_legendre", show_default=True, help="Comma list of quadrature rules (also riemann_right).")
@click.option("--steps", default="1,4,16", show_default=True, help="Comma list of step counts.")
@click.option("--first-order/--no-first-order", default=True, show_default=True,
              help="Also grad_x_input and every layer's complete term (implicit baseline 0).")
@click.option("--keep-first", is_flag=True, help="With --prompts: integrated gradients at the input keep each prompt's first token (the attention sink) in the baseline.")
@click.option("--limit", default=8, show_default=True, type=click.IntRange(min=1), help="Use the first N images or prompts.")
@click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1), help="Path points per forward + backward pass.")
@click.option("--items-per-pass", default=8, show_default=True, type=click.IntRange(min=1), help="Images or prompts explained together.")
@click.option("--out", "-o", required=True, type=OutDir(), help="Results folder.")
@model_option(default=None, help="Image model (folder, Hub name or timm:NAME; default shipped ViT-Ti) or, with --prompts, a causal LM (default SmolLM2-135M-Instruct).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None, help="Weights file for a timm:NAME model.")
@device_option()
def attribution_error(data, prompts, layers, baselines, rules, steps, first_order, keep_first, limit, batch_size, items_per_pass,
                      out, model, checkpoint, device):  # fmt: skip
    """The attribution error of integrated gradients (every layer, baseline, rule and step count given)
    and of the first-order methods: the target f(x) - f(x') against the sum of the attributions.

    Writes results.json, results.csv and results.md to OUT.
    """
    from tqdm import tqdm

    from ..evaluation.attribution_error import first_order_configs, ig_configs, image_path_fn, lm_path_fn, measure, write_results

    if (data is None) == (prompts is None):
        raise AttngradError("give exactly one of --data FOLDER (images) and --prompts FILE (a causal LM)")
    if keep_first and prompts is None:
        raise AttngradError("--keep-first keeps a prompt's first token; it needs --prompts")
    if prompts is not None and checkpoint is not None:
        raise AttngradError("--checkpoint is for a timm image model; leave it out with --prompts")
    configs = ig_configs(_names(layers, "--layers"), _names(baselines, "--baselines"), _names(rules, "--rules"),
                         _ints(steps, "--steps"))
    items: list = _images(data, limit) if data is not None else _prompts(prompts, limit)
    if prompts is not None:
        from ..lm import LMExplainer

        explainer = LMExplainer.from_pretrained(model, device=device)
        num_layers = explainer.adapter.num_layers
    else:
        from ..explainer import Explainer
        from ..models import load_model

        explainer = Explainer(load_model(model, device=device, checkpoint=checkpoint))
        num_layers = explainer.adapter.num_layers
    if first_order:
        configs = first_order_configs(num_layers) + configs
    rows: list[dict] = []
    chunks = [items[i : i + items_per_pass] for i in range(0, len(items), items_per_pass)]
    with tqdm(total=len(chunks) * len(configs), desc="attribution error", unit="config", disable=None) as bar:
        for c, chunk in enumerate(chunks):
            if prompts is not None:
                path = lm_path_fn(explainer, chunk, batch_size=batch_size, keep_first=keep_first)
            else:
                pixels = explainer.prepare([str(p) for p in chunk])[0]
                path = image_path_fn(explainer, pixels, batch_size=batch_size)
            rows += measure(path, configs, offset=c * items_per_pass, progress=bar)
    settings = {"data": str(data) if data is not None else None, "prompts": str(prompts) if prompts is not None else None,
                "items": len(items), "model": str(model or ("SmolLM2-135M-Instruct" if prompts else "shipped ViT-Ti")),
                "layers": layers, "baselines": baselines, "rules": rules, "steps": steps, "first_order": first_order, "keep_first": keep_first}
    write_results(rows, settings, Path(out))
    click.echo(Path(out, "results.md").read_text())
    click.echo(f"wrote results.json, results.csv, results.md to {out}")
