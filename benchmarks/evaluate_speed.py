"""Speed of the perturbation test (attngrad.evaluation): images/s, overhead over the model, batching gain.

Prints, for N images:
- images/s of the batched run (``run_perturbation``, DataLoader workers, fixed batches);
- that run's time divided by the time of the model passes it needs, timed in the same process
  at the same batch sizes (one forward + backward explanation pass per batch, and
  ``N x methods x 2 directions x 9`` perturbed forwards in chunks of ``--eval-batch-size``):
  the target is <= 1.25, i.e. loading, pixel removal and bookkeeping add at most a quarter;
- the speed-up over a one-image-at-a-time loop of the same protocol (batch 1, one perturbed
  image per forward, no loader workers).

    python benchmarks/evaluate_speed.py --images 8 --batch-size 8 [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _timing import write_json  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)

from attngrad import Explainer
from attngrad.evaluation import RunSettings, discover, run_perturbation
from attngrad.evaluation.perturbation import STEPS
from attngrad.methods import get_method

#: The shared ImageNet sample beside the clone (``--data`` to use another folder).
DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample")
METHODS = "gae,complete,rollout,raw_attention,attn_gradcam,random"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_run(explainer: Explainer, dataset, methods, batch_size: int, eval_batch_size: int, workers: int) -> float:
    """Wall time of a full run (explanations, perturbations, shards, summary) into a temporary folder."""
    with tempfile.TemporaryDirectory() as out:
        _sync(explainer.device)
        start = time.perf_counter()
        settings = RunSettings(list(methods), batch_size=batch_size, eval_batch_size=eval_batch_size, workers=workers,
                               progress=False)  # fmt: skip
        run_perturbation(explainer, dataset, out, settings)
        _sync(explainer.device)
        return time.perf_counter() - start


def model_time(explainer: Explainer, dataset, methods, batch_size: int, eval_batch_size: int) -> float:
    """Time of the model passes a run needs, at the same batch sizes, on inputs already on the device."""
    n = len(dataset.samples)
    size = explainer.prepare(dataset.samples[0].path)[0].shape[-2:]
    instances = [get_method(m) for m in methods]
    total = 0.0
    perturbed_inputs = torch.randn(eval_batch_size, 3, *size, device=explainer.device)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn(b, 3, *size, device=explainer.device)
        labels = torch.tensor([s.label for s in dataset.samples[start : start + b]], device=explainer.device)
        perturbed = b * len(STEPS)  # per method and direction
        _sync(explainer.device)
        t0 = time.perf_counter()
        explainer.trace(x, target=labels, methods=instances)
        with torch.inference_mode():
            for _ in range(len(methods) * 2):
                for chunk in range(0, perturbed, eval_batch_size):
                    explainer.adapter.forward(perturbed_inputs[: min(eval_batch_size, perturbed - chunk)])
        _sync(explainer.device)
        total += time.perf_counter() - t0
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--model", default=None, help="default: the shipped ViT-Ti")
    parser.add_argument("--device", default=None)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--skip-single", action="store_true", help="skip the one-image-at-a-time loop")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    explainer = Explainer.from_pretrained(args.model, device=args.device)
    dataset = discover(args.data, explainer.labels, limit=args.images)
    methods = args.methods.split(",")
    with torch.inference_mode():  # warm-up
        explainer.adapter.forward(explainer.prepare(dataset.samples[0].path)[0])

    n = len(dataset.samples)
    run_s = timed_run(explainer, dataset, methods, args.batch_size, args.eval_batch_size, args.workers)
    model_s = model_time(explainer, dataset, methods, args.batch_size, args.eval_batch_size)
    result = {
        "device": str(explainer.device),
        "threads": torch.get_num_threads(),
        "images": n,
        "methods": methods,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "run_s": run_s,
        "images_per_s": n / run_s,
        "model_passes_s": model_s,
        "run_over_model": run_s / model_s,
    }
    print(f"{n} images, {len(methods)} methods, batch {args.batch_size}, eval batch {args.eval_batch_size}, "
          f"{explainer.device}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"batched run:      {run_s:8.1f} s  {n / run_s:7.3f} images/s")
    print(f"model passes:     {model_s:8.1f} s  run / model = {run_s / model_s:.3f} (target <= 1.25)")
    if not args.skip_single:
        single_s = timed_run(explainer, dataset, methods, 1, 1, 0)
        result.update(single_s=single_s, single_images_per_s=n / single_s, speedup=single_s / run_s)
        print(f"one at a time:    {single_s:8.1f} s  {n / single_s:7.3f} images/s  batched speed-up {single_s / run_s:.2f}x")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
