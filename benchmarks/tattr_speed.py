"""T-Attr speed: time of ``explain(method="tattr")`` at batch 16 over the time of a forward+backward pass.

    python benchmarks/tattr_speed.py [--model PATH] [--batch 16] [--repeats 5] [--device cpu]

"forward+backward" is the same minimal pass as in ``explain_speed.py``: a forward pass of the
eager-attention model and a backward pass of the summed top logits to the input. The T-Attr
time is the whole explanation: its forward pass (with the recording hooks), its backward pass
to the attention maps, the relevance propagation and the rollout. Target (issue 6): <= 3x on CPU.
``lrp`` (to the pixels) and ``partial_lrp`` (last layer only, no backward) are timed alongside.
Timings are medians over ``--repeats`` rounds after one warm-up round; each round runs every
case once, in turn, so that load from other processes affects all cases alike.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Callable

import torch

from attngrad import Explainer
from attngrad.demo import asset_image

IMAGES = ["el1.jpg", "catdog.png", "n01871265_tusker.jpg", "n01944390_snail.jpg", "n01943899_conch.jpg",
          "n01945685_slug.jpg", "n01608432_kite.jpg", "n01614925_bald_eagle.jpg", "n02391049_zebra.jpg",
          "n02108422_bull_mastiff.jpg", "n02123159_tiger_cat.jpg", "n02504458_African_elephant.jpg"]
TARGET = 3.0


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per function, run in turns (one warm-up round) so load drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Hugging Face folder or name (default: shipped ViT-Ti)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    ex = Explainer.from_pretrained(args.model, device=args.device)
    paths = [asset_image(name) for name in itertools.islice(itertools.cycle(IMAGES), args.batch)]
    batch, _ = ex.prepare(paths)

    def fwd_bwd() -> None:
        x = batch.detach().requires_grad_(True)
        logits = ex.adapter.forward(x).logits
        torch.autograd.grad(logits.max(dim=1).values.sum(), x)

    methods = ("tattr", "lrp", "partial_lrp")
    fns = {"forward+backward": fwd_bwd, **{m: (lambda m=m: ex.explain(batch, method=m)) for m in methods}}
    times = interleaved_medians(fns, args.repeats)
    base = times["forward+backward"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {ex.device}, batch {args.batch}, "
          f"model {type(ex.adapter.model).__name__}, median of {args.repeats}")
    print(f"{'forward+backward':>16}: {base:8.3f} s")
    for method in methods:
        t = times[method]
        note = f"  (target <= {TARGET:.0f}x: {'met' if t / base <= TARGET else 'NOT met'})" if method == "tattr" else ""
        print(f"{method:>16}: {t:8.3f} s   ratio {t / base:.2f}x{note}")

if __name__ == "__main__":
    main()
