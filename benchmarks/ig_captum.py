"""attngrad's integrated gradients against Captum's LayerIntegratedGradients on the same layer, baseline,
rule and steps (issue 24; docs/results/attribution-error.md).

Captum is never an attngrad dependency: install it into a folder of its own and put that folder on
PYTHONPATH for this script only:

    python -m pip install --no-deps --target ../peers/captum captum
    PYTHONPATH=src:../peers/captum python benchmarks/ig_captum.py --subject vit --limit 4 --out OUT
    PYTHONPATH=src:../peers/captum python benchmarks/ig_captum.py --subject lm --limit 4 --out OUT

Pairs compared (the same path, the same points):

* ``vit``: the shipped ViT-Ti; attngrad ``ig`` at layer ``input`` (pixels) from baseline 0, summed per
  patch, against Captum's LayerIntegratedGradients on the patch embedding (inputs: pixels, baselines:
  0). The patch embedding is linear and each pixel feeds one patch, so the per-patch sums are equal in
  exact arithmetic.
* ``lm``: SmolLM2-135M-Instruct; attngrad ``lm_integrated_gradients`` at layer ``input`` from baseline
  ``pad`` (the pad token's embedding at every position) against Captum's LayerIntegratedGradients on the
  token embedding with baseline ids all pad; one prompt at a time (no padding).

Rules: Captum ``gausslegendre`` n = attngrad ``gauss_legendre`` n; Captum ``riemann_left`` n =
attngrad ``riemann_left`` n; Captum ``riemann_trapezoid`` n (n points) = attngrad ``trapezoid`` n - 1
(intervals, n points). Captum's trapezoid puts its n points at k/(n-1) but weighs them 1/n (ends
1/(2n)), weights summing to (n-1)/n (captum/attr/_utils/approximation_methods.py, riemann_builders):
its attributions are the trapezoid's times (n-1)/n, so the map difference is also given after
rescaling Captum's by n/(n-1). Reported per pair: the relative difference of the maps (max |ours - captum| /
max |captum|), attngrad's attribution error and Captum's convergence delta (both |Σ a - (f(x) - f(x'))|),
and the model rows each ran (forward rows counted by a hook on the model: the path points, plus the
ends f(x), f(x')).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from attngrad.errors import AttngradError

PAIRS = [("gausslegendre", "gauss_legendre", 0), ("riemann_left", "riemann_left", 0), ("riemann_trapezoid", "trapezoid", -1)]


class RowCounter:
    """Rows (batch entries) through ``model``'s forward while active."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.rows = model, 0

    def __enter__(self) -> "RowCounter":
        def hook(module, args, kwargs):
            first = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            self.rows += int(first.shape[0])

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _rescale(rule: str, steps: int) -> float:
    """Captum's trapezoid weights sum to (n-1)/n; the factor that makes them sum to 1."""
    return steps / (steps - 1) if rule == "riemann_trapezoid" else 1.0


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))


def vit_rows(limit: int, steps_list: list[int], batch_size: int, data: Path) -> list[dict]:
    from captum.attr import LayerIntegratedGradients

    from attngrad import Explainer
    from attngrad.methods import IntegratedGradients
    from attngrad.models import load_model

    ex = Explainer(load_model(None))
    model = ex.adapter.model
    paths = sorted(p for p in data.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:limit]
    pixels = ex.prepare([str(p) for p in paths])[0]
    trace = ex.trace(pixels, methods=[IntegratedGradients()])
    targets = trace.targets

    def forward(px):
        return model(pixel_values=px).logits

    lig = LayerIntegratedGradients(forward, model.vit.embeddings.patch_embeddings)
    rows = []
    for captum_rule, our_rule, shift in PAIRS:
        for steps in steps_list:
            with RowCounter(model) as count:
                start = time.perf_counter()
                attr, delta = lig.attribute(pixels, baselines=torch.zeros_like(pixels), target=targets, n_steps=steps,
                                            method=captum_rule, internal_batch_size=batch_size,
                                            return_convergence_delta=True)
                captum_s = time.perf_counter() - start
            theirs = attr.sum(-1).detach().numpy()  # (B, patches)
            ours_m = IntegratedGradients(layer="input", baseline="zero", steps=steps + shift, rule=our_rule,
                                         batch_size=batch_size)
            with RowCounter(model) as ours_count:
                start = time.perf_counter()
                scores = ours_m.token_scores(trace)[:, 1:].detach().numpy()
                ours_s = time.perf_counter() - start
            err = ours_m.path(trace)[1].error()
            rows.append({"subject": "vit-ti input (pixels) / patch embedding", "baseline": "zero", "captum_rule": captum_rule,
                         "captum_steps": steps, "our_rule": our_rule, "our_steps": steps + shift,
                         "map_rel_diff": max(_agreement(scores[i], theirs[i]) for i in range(len(paths))),
                         "map_rel_diff_rescaled": max(_agreement(scores[i], theirs[i] * _rescale(captum_rule, steps))
                                                      for i in range(len(paths))),
                         "our_error": float(err["absolute"].mean()), "captum_delta": float(delta.abs().mean()),
                         "our_rows": ours_count.rows / len(paths), "captum_rows": count.rows / len(paths),
                         "our_s": ours_s, "captum_s": captum_s, "items": len(paths)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def lm_rows(limit: int, steps_list: list[int], batch_size: int, prompts: list[str]) -> list[dict]:
    from captum.attr import LayerIntegratedGradients

    from attngrad.lm import LMExplainer
    from attngrad.lm.ig import lm_integrated_gradients

    ex = LMExplainer.from_pretrained(None)
    model, adapter = ex.adapter.model, ex.adapter
    pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else adapter.pad_id

    def forward(ids, t):
        return model(input_ids=ids, use_cache=False).logits[:, -1, t]

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    rows = []
    for captum_rule, our_rule, shift in PAIRS:
        for steps in steps_list:
            diffs, rescaled, ours_err, deltas, our_rows, captum_rows, our_s, captum_s = [], [], [], [], 0, 0, 0.0, 0.0
            for text in prompts[:limit]:
                ids = torch.tensor([adapter.tokenize(text)], device=ex.device)
                with torch.no_grad():
                    t = int(model(input_ids=ids, use_cache=False).logits[0, -1].argmax())
                with RowCounter(model) as count:
                    start = time.perf_counter()
                    attr, delta = lig.attribute(ids, baselines=torch.full_like(ids, pad), additional_forward_args=(t,),
                                                n_steps=steps, method=captum_rule, internal_batch_size=batch_size,
                                                return_convergence_delta=True)
                    captum_s += time.perf_counter() - start
                captum_rows += count.rows
                with RowCounter(model) as ours_count:
                    start = time.perf_counter()
                    out = lm_integrated_gradients(ex, [text], layer="input", baseline="pad", steps=steps + shift,
                                                  rule=our_rule, batch_size=batch_size, targets=torch.tensor([t]))
                    our_s += time.perf_counter() - start
                our_rows += ours_count.rows
                theirs = attr.sum(-1)[0].detach().numpy()
                diffs.append(_agreement(out.scores[0].detach().numpy(), theirs))
                rescaled.append(_agreement(out.scores[0].detach().numpy(), theirs * _rescale(captum_rule, steps)))
                ours_err.append(float(out.result.error()["absolute"][0]))
                deltas.append(float(delta.abs()[0]))
            n = min(limit, len(prompts))
            rows.append({"subject": "smollm2 input (token embeddings)", "baseline": "pad", "captum_rule": captum_rule,
                         "captum_steps": steps, "our_rule": our_rule, "our_steps": steps + shift,
                         "map_rel_diff": max(diffs), "map_rel_diff_rescaled": max(rescaled), "our_error": float(np.mean(ours_err)),
                         "captum_delta": float(np.mean(deltas)), "our_rows": our_rows / n, "captum_rows": captum_rows / n,
                         "our_s": our_s, "captum_s": captum_s, "items": n})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| subject | Captum rule, n | ours rule, steps | max map diff (rel.) | same, Captum rescaled | our error | "
             "Captum delta | our rows/item | Captum rows/item |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['subject']} | {r['captum_rule']} {r['captum_steps']} | {r['our_rule']} {r['our_steps']} | "
                     f"{r['map_rel_diff']:.1e} | {r['map_rel_diff_rescaled']:.1e} | {r['our_error']:.3g} | {r['captum_delta']:.3g} | {r['our_rows']:.0f} | "
                     f"{r['captum_rows']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", choices=["vit", "lm"], required=True)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--steps", default="4,16,64")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imagenet-sample"))
    parser.add_argument("--prompts", type=Path, default=Path("docs/results/attribution-error/prompts.txt"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        import captum  # noqa: F401
    except ImportError:
        raise SystemExit("captum is not importable; install it into its own folder and put it on PYTHONPATH (see --help)") from None
    steps = [int(s) for s in args.steps.split(",")]
    torch.set_grad_enabled(True)
    if args.subject == "vit":
        rows = vit_rows(args.limit, steps, args.batch_size, args.data)
    else:
        prompts = [p.strip() for p in args.prompts.read_text().splitlines() if p.strip()]
        rows = lm_rows(args.limit, steps, args.batch_size, prompts)
    if not rows:
        raise AttngradError("nothing measured")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.subject}.json").write_text(json.dumps(rows, indent=1))
    (args.out / f"{args.subject}.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
