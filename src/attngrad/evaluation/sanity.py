"""Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

The model's layers are re-initialised cumulatively from the top down - the classifier
head, then the Transformer blocks from the last to the first - and after each step every
method's maps are compared with its maps on the trained model by Spearman rank
correlation over the patches (mean over images). A method whose maps stay the same while
the model is destroyed is not explaining the model.

The trained model is never modified: the randomised one is a deep copy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import AttngradError
from ..explainer import Explainer
from ..io import load_image
from ..models.base import ModelAdapter
from .data import DataSet, preprocessor_of


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of two (B, N) tensors (Pearson correlation of the ranks)."""
    ra = a.argsort(dim=1).argsort(dim=1).double()
    rb = b.argsort(dim=1).argsort(dim=1).double()
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def cascade(model: nn.Module, num_layers: int) -> list[tuple[str, nn.Module]]:
    """Modules to randomise, top down: the classifier head, then the blocks from last to first.

    The head is the model's last direct child with parameters (``classifier`` in Hugging Face,
    ``head`` in timm); the blocks are the ``ModuleList``/``Sequential`` of ``num_layers`` modules.
    """
    children = [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]
    stacks = [
        (n, m) for n, m in model.named_modules()
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) == num_layers
    ]  # fmt: skip
    if not children or not stacks:
        raise AttngradError(f"cannot find the head and the {num_layers} blocks of {type(model).__name__}")
    head_name, head = children[-1]
    stack_name, stack = stacks[0]
    return [(head_name, head)] + [(f"{stack_name}.{i}", stack[i]) for i in reversed(range(num_layers))]


def _reinitialise(module: nn.Module) -> None:
    """Fresh weights from each submodule's own ``reset_parameters`` (Linear: Kaiming-uniform; LayerNorm: 1/0)."""
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def randomisation_test(
    explainer: Explainer,
    dataset: DataSet,
    methods: Sequence[str],
    explain: str = "label",
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Mean Spearman correlation between each method's trained and randomised maps, per cascade step.

    Returns ``{"steps": [names], "methods": {name: [correlation per step]}, "images": n}``.
    """
    if not dataset.samples:
        raise AttngradError("no images to run the sanity check on")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttngradError(f"--batch-size must be a positive number of images, not {batch_size}")
    if not methods:
        raise AttngradError("no methods given; e.g. --methods gae,complete,random")
    pre = preprocessor_of(explainer.adapter)
    images = pre([load_image(s.path) for s in dataset.samples])
    labels = torch.tensor([s.label for s in dataset.samples])
    batches = [slice(i, i + batch_size) for i in range(0, len(images), batch_size)]

    def all_maps(ex: Explainer, targets: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each method's maps, and the classes explained (``targets``, or each image's top-1 when None)."""
        parts: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
        explained = []
        for sl in batches:
            target = None if targets is None else targets[sl].to(ex.device)
            res = ex.explain_methods(images[sl].to(ex.device), methods, target=target)
            for name, r in res.items():
                parts[name].append(r.maps.detach().flatten(1).cpu())
            explained.append(next(iter(res.values())).targets.cpu())
        return {name: torch.cat(p) for name, p in parts.items()}, torch.cat(explained)

    trained, targets = all_maps(explainer, labels if explain == "label" else None)
    adapter: ModelAdapter = copy.deepcopy(explainer.adapter)
    randomised = Explainer(adapter)
    with torch.inference_mode():
        num_layers = len(adapter.forward(images[:1].to(adapter.device)).attentions)
    steps = cascade(adapter.model, num_layers)
    result: dict[str, list[float]] = {m: [] for m in methods}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _name, module in tqdm(steps, desc="randomising", unit="layer", disable=not progress):
            _reinitialise(module)
            maps, _ = all_maps(randomised, targets)
            for m in methods:
                result[m].append(float(spearman(trained[m], maps[m]).nanmean()))
    return {"steps": [n for n, _ in steps], "methods": result, "images": len(images), "explained_class": explain}


def write_sanity(summary: dict[str, Any], out: str | Path) -> None:
    """``sanity.json``, ``sanity.csv`` and ``sanity.png`` (one line per method) in ``out``."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .storage import _atomic_write
    from .writers import save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "sanity.json", json.dumps(summary, indent=2))
    rows = ["method," + ",".join(summary["steps"])]
    rows += [f"{m}," + ",".join(f"{v:.4f}" for v in vals) for m, vals in summary["methods"].items()]
    _atomic_write(out / "sanity.csv", "\n".join(rows) + "\n")
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(summary["steps"]))
    for m, vals in summary["methods"].items():
        ax.plot(x, vals, marker="o", ms=3, label=m)
    ax.set_xticks(x, summary["steps"], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Spearman correlation with trained-model maps")
    ax.set_title(f"Model-parameter randomisation (top down), {summary['images']} images")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    save_png(fig, out / "sanity.png")
