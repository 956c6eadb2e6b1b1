"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..explainer import Explainer
from ..methods import METHODS


def model_options(fn):
    """``--model``, ``--checkpoint`` and ``--device``, passed to the command as ``explainer``."""

    @click.option("--model", "model", default=None, help="Hugging Face folder or Hub name, or timm:NAME (default: shipped ViT-Ti).")
    @click.option("--checkpoint", type=click.Path(), default=None, help="Weights file for a timm:NAME model.")
    @click.option("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cpu).")
    @functools.wraps(fn)
    def wrapper(*args, model, checkpoint, device, **kwargs):
        from ..models import load_model

        explainer = Explainer(load_model(model, device=device, checkpoint=checkpoint))
        return fn(*args, explainer=explainer, **kwargs)

    return wrapper


def split_list(value: str | None) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; ``"all"`` for methods expands to every registered one."""
    if not value:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    return list(METHODS) if items == ["all"] else items


def safe_name(text: str) -> str:
    """A file-name-safe version of a class name or file stem."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "x"


def out_dir(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
