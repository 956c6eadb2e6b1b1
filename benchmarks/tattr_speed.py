"""T-Attr speed: time of ``explain(method="tattr")`` at batch 16 over the time of a forward+backward pass.

    python benchmarks/tattr_speed.py [--model PATH] [--batch 16] [--repeats 5] [--device cpu] [--reference-rules]
                                     [--methods tattr,lrp,partial_lrp] [--cpu-time] [--flops]

"forward+backward" is the same minimal pass as in ``explain_speed.py``: a forward pass of the
eager-attention model and a backward pass of the summed top logits to the input. The T-Attr
time is the whole explanation: its forward pass (with the recording hooks), its backward pass
to the attention maps, the relevance propagation and the rollout. Target (issue 6): <= 3x on CPU.
``lrp`` (to the pixels) and ``partial_lrp`` (last layer only, no backward) are timed alongside
(``--methods`` names others, e.g. ``dix``, whose shared earlier blocks this measures).
Timings are medians over ``--repeats`` rounds after one warm-up round; each round runs every
case once, in turn, so that load from other processes affects all cases alike. On a machine
shared with other jobs, ``--cpu-time`` (with ``OMP_NUM_THREADS=1``) times by the process's CPU
seconds, which waiting for a core does not count.

``--flops`` also counts the floating-point operations of every matrix product and convolution (PyTorch's
formulas; elementwise work not counted) of each method and of the forward+backward, and prints their ratio:
the part of the cost no scheduling can remove. T-Attr's z+ rule needs three products per linear layer
(``|x| |W|^T`` for ``Z`` and ``S W``, ``S |W|`` for ``R_x``) on top of its own forward pass (one) and backward
pass to the maps (one), against the plain pass's two.

``--reference-rules`` also times each method with the propagation's rules computed in the
reference code's form (:data:`REFERENCE_RULES`: z+ with four products, ``Z = x+ W+ + x- W-``,
``R = x+ (S W+) + x- (S W-)``; divisions into new tensors; ``A V`` recomputed), swapped into
:mod:`attngrad.methods.relprop` for those runs only, and prints the largest difference of the maps.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from _timing import matmul_flops  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)

from attngrad import Explainer
from attngrad.demo import asset_image
from attngrad.methods import relprop

IMAGES = ["el1.jpg", "catdog.png", "n01871265_tusker.jpg", "n01944390_snail.jpg", "n01943899_conch.jpg",
          "n01945685_slug.jpg", "n01608432_kite.jpg", "n01614925_bald_eagle.jpg", "n02391049_zebra.jpg",
          "n02108422_bull_mastiff.jpg", "n02123159_tiger_cat.jpg", "n02504458_African_elephant.jpg"]
TARGET = 2.0  # issue 21 (issue 6 asked <= 3x)


def _zplus_four(x, weight, relevance, output=None, bias=None):
    """z+ as the reference code computes it: four products."""
    w_pos, w_neg, x_pos, x_neg = weight.clamp(min=0), weight.clamp(max=0), x.clamp(min=0), x.clamp(max=0)
    s = relprop.safe_divide(relevance, F.linear(x_pos, w_pos) + F.linear(x_neg, w_neg))
    return x_pos * (s @ w_pos) + x_neg * (s @ w_neg)


def _matmul_plain(x, y, relevance, *, epsilon=0.0, product=None):
    if epsilon:
        raise SystemExit("--reference-rules compares the reference rules (epsilon 0) only")
    s = relprop.safe_divide(relevance, x @ y)
    return x * (s @ y.transpose(-1, -2)) / 2, y * (x.transpose(-1, -2) @ s) / 2


def _residual_plain(a, b, relevance, *, epsilon=0.0):
    if epsilon:
        raise SystemExit("--reference-rules compares the reference rules (epsilon 0) only")
    s = relprop.safe_divide(relevance, a + b)
    r_a, r_b = a * s, b * s
    sum_a, sum_b, total = relprop.per_image_sum(r_a), relprop.per_image_sum(r_b), relprop.per_image_sum(relevance)
    denom = sum_a.abs() + sum_b.abs()
    fact_a = relprop.safe_divide(sum_a.abs(), denom) * total
    fact_b = relprop.safe_divide(sum_b.abs(), denom) * total
    return r_a * relprop.safe_divide(fact_a, sum_a), r_b * relprop.safe_divide(fact_b, sum_b)


#: The rules in the reference code's form (epsilon 0 only), for ``--reference-rules``.
REFERENCE_RULES: dict[str, Callable] = {"zplus_linear": _zplus_four, "matmul_relevance": _matmul_plain,
                                        "residual_split": _residual_plain}


def with_rules(rules: dict[str, Callable], fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with ``rules`` swapped into :mod:`attngrad.methods.relprop` (restored after)."""
    def run() -> object:
        saved = {name: getattr(relprop, name) for name in rules}
        for name, rule in rules.items():
            setattr(relprop, name, rule)
        try:
            return fn()
        finally:
            for name, rule in saved.items():
                setattr(relprop, name, rule)
    return run


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
                        ) -> dict[str, float]:
    """Median seconds per function by ``clock``, run in turns (one warm-up round) so load drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = clock()
            fn()
            if round_:
                times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Hugging Face folder or name (default: shipped ViT-Ti)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default="tattr,lrp,partial_lrp", help="comma-separated methods to time")
    parser.add_argument("--reference-rules", action="store_true", help="also time the rules in the reference code's form")
    parser.add_argument("--flops", action="store_true", help="also count the matrix products' operations")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU seconds, not wall seconds (a shared machine, 1 thread)")
    args = parser.parse_args()

    ex = Explainer.from_pretrained(args.model, device=args.device)
    paths = [asset_image(name) for name in itertools.islice(itertools.cycle(IMAGES), args.batch)]
    batch, _ = ex.prepare(paths)

    def fwd_bwd() -> None:
        x = batch.detach().requires_grad_(True)
        logits = ex.adapter.forward(x).logits
        torch.autograd.grad(logits.max(dim=1).values.sum(), x)

    methods = [m for m in args.methods.split(",") if m]
    fns: dict[str, Callable[[], object]] = {"forward+backward": fwd_bwd}
    for m in methods:
        fns[m] = lambda m=m: ex.explain(batch, method=m).maps
        if args.reference_rules:
            fns[f"{m} (reference form)"] = with_rules(REFERENCE_RULES, fns[m])
    times = interleaved_medians(fns, args.repeats, time.process_time if args.cpu_time else time.perf_counter)
    base = times["forward+backward"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {ex.device}, batch {args.batch}, "
          f"model {type(ex.adapter.model).__name__}, median of {args.repeats}, {'CPU' if args.cpu_time else 'wall'} seconds")
    print(f"{'forward+backward':>16}: {base:8.3f} s")
    for method in methods:
        t = times[method]
        note = f"  (target <= {TARGET:.0f}x: {'met' if t / base <= TARGET else 'NOT met'})" if method == "tattr" else ""
        print(f"{method:>16}: {t:8.3f} s   ratio {t / base:.2f}x{note}")
        if args.reference_rules:
            ref = times[f"{method} (reference form)"]
            ours, theirs = fns[method](), fns[f"{method} (reference form)"]()
            diff = float((ours - theirs).abs().max() / theirs.abs().max())  # type: ignore[operator]
            print(f"{'reference form':>16}: {ref:8.3f} s   ratio {ref / base:.2f}x   ours / reference form "
                  f"{t / ref:.2f}; maps' max |difference| / max |map| {diff:.1e}")
    if args.flops:
        base_flops = matmul_flops(fwd_bwd)
        print(f"matrix-product operations per batch (GFLOP), ratio to forward+backward's {base_flops / 1e9:.2f}:")
        for method in methods:
            flops = matmul_flops(fns[method])
            print(f"{method:>16}: {flops / 1e9:8.2f}   ratio {flops / base_flops:.2f}x")

if __name__ == "__main__":
    main()
