"""Figures of docs/results/attribution-error.md (issue 24).

    PYTHONPATH=src python docs/results/attribution_error_figures.py curves OUT.png RESULTS_DIR [RESULTS_DIR ...]
    PYTHONPATH=src python docs/results/attribution_error_figures.py table RESULTS_DIR [RESULTS_DIR ...]
    PYTHONPATH=src python docs/results/attribution_error_figures.py layers el1 OUT.png

``table``: the ``ig`` rows as one Markdown line per layer and rule, the step counts as columns.
``curves``: median relative attribution error of ``ig`` against forward + backward passes per item,
one panel per layer, one line per quadrature rule, from an ``attngrad evaluate attribution-error``
results folder. ``layers``: the ``ig`` maps of one image at the input, at several blocks' hidden
states (baseline ``mean``) and attention maps (baseline ``zero``), Gauss–Legendre 16 nodes, each shown
signed as ``S / max|S|`` over the image, with the map's attribution error in its title.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RULE_STYLE = {"riemann_left": "o-", "trapezoid": "s-", "gauss_legendre": "^-", "riemann_right": "v-"}


def _load(folders: list[Path]) -> tuple[dict, list[dict]]:
    datas = [json.loads((f / "results.json").read_text()) for f in folders]
    return datas[0], [s for d in datas for s in d["summary"] if s["method"] == "ig"]


def table(folders: list[Path]) -> str:
    _, summary = _load(folders)
    steps = sorted({s["steps"] for s in summary})
    lines = ["| layer (mean abs target) | baseline | rule | " + " | ".join(f"{n} steps" for n in steps) + " |",
             "|---|---|---|" + "---:|" * len(steps)]
    for key in dict.fromkeys((s["layer"], s["baseline"], s["rule"]) for s in summary):
        cells = {s["steps"]: s for s in summary if (s["layer"], s["baseline"], s["rule"]) == key}
        target = next(iter(cells.values()))["mean_abs_target"]
        row = [f"{cells[n]['median_relative']:.2g} ({cells[n]['mean_absolute']:.2g}), {cells[n]['passes']} p."
               if n in cells else "" for n in steps]
        lines.append(f"| {key[0]} ({target:.3g}) | {key[1]} | {key[2]} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def curves(folders: list[Path], out: Path) -> None:
    data, summary = _load(folders)
    layers = list(dict.fromkeys(s["layer"] for s in summary))
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for rule, style in RULE_STYLE.items():
            pts = [(s["passes"], s["median_relative"]) for s in summary if s["layer"] == layer and s["rule"] == rule]
            if pts:
                x, y = zip(*sorted(pts))
                ax.loglog(x, np.maximum(y, 1e-12), style, label=rule, ms=4)
        base = next(s["baseline"] for s in summary if s["layer"] == layer)
        ax.set_title(f"{layer} (baseline {base})", fontsize=9)
        ax.set_xlabel("forward+backward passes per item")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("median relative error")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"integrated gradients: |sum of attributions - (f(x) - f(x'))| / |f(x) - f(x')|, "
                 f"{data['settings']['model']}, {data['settings']['items']} items", fontsize=9)
    fig.subplots_adjust(top=0.82)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def layers(image: str, out: Path) -> None:
    import torch

    from attngrad import Explainer
    from attngrad.io import find_sample
    from attngrad.methods import IntegratedGradients
    from attngrad.models import load_model

    path = Path(image) if Path(image).exists() else find_sample(image)
    ex = Explainer(load_model(None))
    pixels, shown = ex.prepare([str(path)])
    picture = np.asarray(shown[0].resize((224, 224))) / 255.0
    specs = [("input", "zero")] + [(f"hidden:{k}", "mean") for k in (0, 2, 5, 8, 11)]
    specs += [("input", "blur")] + [(f"attention:{k}", "zero") for k in (0, 2, 5, 8, 11)]
    methods = [IntegratedGradients(layer=layer, baseline=base, steps=16, rule="gauss_legendre", batch_size=16)
               for layer, base in specs]
    trace = ex.trace(pixels, methods=methods)
    fig, axes = plt.subplots(2, 6, figsize=(15, 5.6))
    for ax, m, (layer, base) in zip(axes.flat, methods, specs):
        grid = m(trace)[0].detach().numpy()
        err = m.path(trace)[1].error()
        cls = float(m.token_scores(trace)[0, 0] / err["total"][0])  # the CLS token's share of the sum
        scale = max(np.abs(grid).max(), 1e-12)
        heat = torch.nn.functional.interpolate(torch.tensor(grid / scale)[None, None], size=(224, 224),
                                               mode="bilinear", align_corners=False)[0, 0].numpy()
        ax.imshow(picture)
        ax.imshow(heat, cmap="bwr", vmin=-1, vmax=1, alpha=0.55)
        ax.set_title(f"{layer}, {base}: CLS {cls:.0%}\nsum {float(err['total'][0]):.2f} / target "
                     f"{float(err['target'][0]):.2f}", fontsize=8)
        ax.axis("off")
    label = ex.labels[int(trace.targets[0])]
    fig.suptitle(f"ig maps across layers, {path.name} -> {label!r} "
                 "(Gauss-Legendre 16; red supports, blue opposes; S / max|S| per map)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=72)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "curves":
        curves([Path(a) for a in sys.argv[3:]], Path(sys.argv[2]))
    elif what == "table":
        print(table([Path(a) for a in sys.argv[2:]]), end="")
    elif what == "layers":
        layers(sys.argv[2], Path(sys.argv[3]))
    else:
        raise SystemExit("usage: attribution_error_figures.py curves OUT.png DIR... | table DIR... | layers IMAGE OUT.png")
