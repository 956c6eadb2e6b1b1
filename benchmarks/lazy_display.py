"""What an explanation costs over one forward+backward pass, measured so that a busy machine
does not decide the answer: CPU time of this process, the variants interleaved round by
round, the median of the per-round ratios.

    python benchmarks/lazy_display.py [--model PATH] [--batch-size 16] [--method complete] [--rounds 5] [--threads 1]

Variants: "fwd+bwd" (forward, backward of the summed top logits to the input), "explain"
(``Explainer.explain``; display images are lazy and not built), "explain+images" (the same,
then every display image read, as a caller that draws the maps does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attngrad import Explainer
from attngrad.demo import asset_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--method", default="complete")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1: CPU time free of spin-waits)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ex = Explainer.from_pretrained(args.model, device=args.device)
    pixels, _ = ex.prepare(asset_image("el1.jpg"))
    batch = pixels.expand(args.batch_size, -1, -1, -1).contiguous()
    gpu = ex.device.type == "cuda"
    clock = time.perf_counter if gpu else time.process_time  # CPU: this process's time only

    def fwd_bwd():
        x = batch.detach().requires_grad_(True)
        logits = ex.adapter.forward(x).logits
        torch.autograd.grad(logits.max(dim=1).values.sum(), x)

    variants = {
        "fwd+bwd": fwd_bwd,
        "explain": lambda: ex.explain(batch, method=args.method),
        "explain+images": lambda: list(ex.explain(batch, method=args.method).images),
    }

    def timed(fn) -> float:
        if gpu:
            torch.cuda.synchronize()
        start = clock()
        fn()
        if gpu:
            torch.cuda.synchronize()
        return clock() - start

    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {ex.device}, "
          f"batch {args.batch_size}, {args.rounds} rounds, {'wall' if gpu else 'CPU'} time")
    for name in variants:
        ratios = [t / b for t, b in zip(times[name], times["fwd+bwd"])]
        print(f"{name:>15}: {statistics.median(times[name]) * 1000 / args.batch_size:8.2f} ms/image, "
              f"ratio to fwd+bwd {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
