"""The attribution error of the baseline-explicit methods (after Cui & Fan, "The Neglected Baseline").

For an explanation at a layer with baseline ``x'``, the attribution target is ``f(x) - f(x')`` (the
explained loss at the input minus the loss with that layer's features replaced by the baseline);
the error compares it with the sum of the attributions, absolute ``|Σ a - (f(x) - f(x'))|`` and
relative (divided by ``|f(x) - f(x')|``).

Measured for integrated gradients (:mod:`attngrad.methods.ig`) at any layer, baseline, rule and
number of steps, and for the first-order methods with their implicit baseline 0: ``grad_x_input``
(the input ``x ⊙ ∇f``) and each layer's term ``∇A ⊙ A`` of ``complete`` (the one-node right
Riemann rule of the path in attention space, see :mod:`attngrad.methods.ig`). Rollout-type maps
(``complete`` itself, GAE, rollout) are products over layers, not sums of attributions to one
layer's features, so they have no attribution target of this kind and are not listed.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..errors import AttngradError
from ..methods._paths import RULES, PathResult, passes
from ..methods.ig import IntegratedGradients, check_baseline, check_layer_spec


@dataclass(frozen=True)
class Config:
    """One explanation whose error is measured: the method's name, its layer, baseline, rule and steps."""

    method: str
    layer: str
    baseline: str
    rule: str
    steps: int

    @property
    def passes(self) -> int:
        """Forward + backward passes per item."""
        return passes(self.rule, self.steps)


def first_order_configs(layers: int) -> list[Config]:
    """``grad_x_input`` and ``complete``'s per-layer terms ``∇A ⊙ A``: implicit baseline 0, one node at α = 1."""
    configs = [Config("grad_x_input", "input", "zero", "riemann_right", 1)]
    configs += [Config(f"complete term {k}", f"attention:{k}", "zero", "riemann_right", 1) for k in range(layers)]
    return configs


def ig_configs(layers: Iterable[str], baselines: Iterable[str], rules: Iterable[str], steps: Iterable[int]) -> list[Config]:
    """Every combination of integrated-gradients settings (checked)."""
    out: list[Config] = []
    for layer in layers:
        check_layer_spec("attribution-error", layer)
        for baseline in baselines:
            check_baseline("attribution-error", baseline)
            for rule in rules:
                IntegratedGradients(rule=rule)  # refuses an unknown rule in one line
                out.extend(Config("ig", layer, baseline, rule, int(s)) for s in steps)
    return out


#: ``path(config) -> PathResult`` for a batch of items.
PathFn = Callable[[Config], PathResult]


def image_path_fn(explainer: Any, pixel_values: torch.Tensor, *, batch_size: int = 32, target: Any = None) -> PathFn:
    """Paths for a batch of images (the explained class: ``target``, default the top class)."""
    probe = IntegratedGradients()
    trace = explainer.trace(pixel_values, target=target, methods=[probe])

    def path(config: Config) -> PathResult:
        m = IntegratedGradients(layer=config.layer, baseline=config.baseline, steps=config.steps, rule=config.rule,
                                batch_size=batch_size)
        return m.path(trace)[1]

    return path


def lm_path_fn(explainer: Any, prompts: Sequence[str], *, batch_size: int = 32, keep_first: bool = False) -> PathFn:
    """Paths for a batch of prompts (the explained token: each prompt's top next token); ``keep_first``:
    at the input, integrated-gradients baselines keep each prompt's first token (the first-order rows never do)."""
    from ..lm.ig import lm_integrated_gradients

    def path(config: Config) -> PathResult:
        return lm_integrated_gradients(explainer, prompts, layer=config.layer, baseline=config.baseline,
                                       steps=config.steps, rule=config.rule, batch_size=batch_size,
                                       keep_first=keep_first and config.method == "ig" and config.layer == "input").result

    return path


def measure(path: PathFn, configs: Sequence[Config], *, offset: int = 0, progress: Any = None) -> list[dict]:
    """One row per (item, config): the target ``f(x) - f(x')``, the attribution sum and the errors."""
    rows = []
    for config in configs:
        err = path(config).error()
        values = {k: v.detach().double().cpu().numpy() for k, v in err.items()}
        if not all(np.isfinite(values[k]).all() for k in ("target", "total")):
            raise AttngradError(
                f"{config.method} at {config.layer} from the {config.baseline} baseline ({config.rule}, {config.steps} "
                "steps) gave NaN or infinite values: the model is undefined at some point of that path (a prompt of "
                "all-zero embeddings, say); choose another baseline (--baselines pad at a language model's input) or "
                "rule (gauss_legendre), or with --prompts use --keep-first")
        for i in range(len(values["target"])):
            rows.append({"item": offset + i, **asdict(config), "passes": config.passes,
                         **{k: float(v[i]) for k, v in values.items()}})
        if progress is not None:
            progress.update(1)
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Per config (in order of first appearance): items, passes, mean |target|, mean and median absolute
    error, median relative error."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in ("method", "layer", "baseline", "rule", "steps")), []).append(row)
    out = []
    for key, items in groups.items():
        absolute = np.array([r["absolute"] for r in items])
        relative = np.array([r["relative"] for r in items])
        out.append({**dict(zip(("method", "layer", "baseline", "rule", "steps"), key)), "items": len(items),
                    "passes": items[0]["passes"],
                    "mean_abs_target": float(np.mean([abs(r["target"]) for r in items])),
                    "mean_absolute": float(absolute.mean()), "median_absolute": float(np.median(absolute)),
                    "median_relative": float(np.median(relative))})
    return out


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def markdown(summary: Sequence[dict]) -> str:
    """The summary as a Markdown table."""
    lines = ["| method | layer | baseline | rule | steps | passes | mean abs target | mean abs error | "
             "median rel error |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['method']} | {s['layer']} | {s['baseline']} | {s['rule']} | {s['steps']} | {s['passes']} "
                     f"| {_fmt(s['mean_abs_target'])} | {_fmt(s['mean_absolute'])} | {_fmt(s['median_relative'])} |")
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[dict], settings: dict, out: Path) -> list[dict]:
    """results.json (settings, summary, rows), results.csv (rows), results.md (summary) in ``out``."""
    summary = summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": settings, "summary": summary, "rows": list(rows)},
                                                 indent=1))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(markdown(summary))
    return summary


__all__ = ["RULES", "Config", "first_order_configs", "ig_configs", "image_path_fn", "lm_path_fn", "measure",
           "summarise", "markdown", "write_results"]
