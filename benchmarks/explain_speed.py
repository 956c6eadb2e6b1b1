"""Explanation speed: ms per image for forward, forward+backward and each method, and the ratio
explain / (forward+backward), at several batch sizes; each method is timed interleaved with its own
forward+backward runs. On CUDA (``--device cuda``) times come from CUDA events and each method's peak
memory (``torch.cuda.max_memory_allocated``) is printed beside the plain pass's.

    python benchmarks/explain_speed.py [--model PATH] [--batch-sizes 1,16,64] [--methods ...] [--repeats 5] [--show-images]

"forward+backward" is the minimal pass a gradient explanation needs: a forward pass of the
same (eager-attention) model and a backward pass of the summed target logits to the input.
"fwd+bwd (weights)" also computes every weight's gradient, as a training step would.
Timings are medians over ``--repeats`` runs after one warm-up run (``--rival-repeats`` for the
rivals, whose passes are many). Display images are built lazily, on first access of
``Explanation.images``; ``--show-images`` times each method with its display images read too.

The rivals (``tam``, ``bi``, ``bi_token``, ``tis``, ``vitcx``, ``dix``) run more model passes than the
shared one; the last table gives, per method, the sequences the model processes per image
(counted from the logits of every ``adapter.forward`` call: the shared pass, integration
steps, masked passes; TIS's sequences keep ``tokens_ratio`` of the tokens).
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import contextmanager

import torch
from _timing import ratio, timed, write_json  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)

from attngrad import METHODS, Explainer
from attngrad.demo import asset_image


def median_ms(fn, repeats: int, device=None) -> float:
    fn()
    return statistics.median(timed(fn, device) for _ in range(repeats)) * 1000


RIVALS = ("tam", "bi", "bi_token", "tis", "vitcx", "dix")


@contextmanager
def counting(adapter, counter: list[int]):
    """Count the sequences (logit rows) of every ``adapter.forward`` call inside."""
    plain = adapter.forward

    def forward(pixel_values):
        out = plain(pixel_values)
        counter[0] += out.logits.shape[0]
        return out

    adapter.forward = forward
    try:
        yield
    finally:
        del adapter.forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--methods", default="complete,gae,absolute,rollout,raw_attention,attn_gradcam,"
                        + ",".join(RIVALS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--show-images", action="store_true", help="also build the display images of each result")
    parser.add_argument("--rival-repeats", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")

    ex = Explainer.from_pretrained(args.model, device=args.device)
    model = ex.adapter.model
    pixels, _ = ex.prepare(asset_image("el1.jpg"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {ex.device}")
    header = f"{'batch':>5} {'forward':>9} {'fwd+bwd':>9} {'fwd+bwd (weights)':>18} " + " ".join(
        f"{m:>13}" for m in methods
    )
    print("ms per image; in brackets: method time / (forward+backward) time")
    record: dict = {"threads": torch.get_num_threads(), "device": str(ex.device), "batches": {}, "sequences": {}}
    print(header)
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        batch = pixels.expand(b, -1, -1, -1).contiguous()

        def forward():
            with torch.no_grad():
                ex.adapter.forward(batch)

        def fwd_bwd():
            x = batch.detach().requires_grad_(True)
            logits = ex.adapter.forward(x).logits
            torch.autograd.grad(logits.max(dim=1).values.sum(), x)

        def fwd_bwd_weights():
            model.zero_grad(set_to_none=True)
            ex.adapter.forward(batch).logits.max(dim=1).values.sum().backward()

        dev = ex.device
        base = median_ms(fwd_bwd, args.repeats, dev)
        row = [median_ms(forward, args.repeats, dev), base, median_ms(fwd_bwd_weights, args.repeats, dev)]
        ratios, peaks = [], {}
        for m in methods:
            repeats = args.rival_repeats if m in RIVALS else args.repeats

            def explain(m=m):
                res = ex.explain(batch, method=m)
                return list(res.images) if args.show_images else res

            # each method timed interleaved with its own forward+backward runs (a load change hits both)
            found = ratio(fwd_bwd, explain, repeats, warmup=1, device=dev)
            row.append(found["explanation_s"] * 1000)
            ratios.append(found["ratio"])
            if "explanation_peak_mb" in found:
                peaks[m] = (found["explanation_peak_mb"], found["forward_backward_peak_mb"])
        cells = " ".join(f"{t / b:9.2f}" for t in row[:2]) + f" {row[2] / b:18.2f} "
        cells += " ".join(f"{t / b:7.2f} ({r:.2f})" for t, r in zip(row[3:], ratios))
        print(f"{b:>5} {cells}")
        record["batches"][b] = {"forward_ms": row[0] / b, "fwd_bwd_ms": row[1] / b,
                                "methods": {m: {"ms": t / b, "ratio": r} for m, t, r in zip(methods, row[3:], ratios)}}
        for m, (peak, base_peak) in peaks.items():  # CUDA only
            print(f"      {m}: peak {peak:.0f} MB vs forward+backward {base_peak:.0f} MB ({peak / base_peak:.2f}x)")
            record["batches"][b]["methods"][m].update(peak_mb=peak, fwd_bwd_peak_mb=base_peak)
    print("\nmodel sequences per image (all forward passes of one explanation, batch 2)")
    pair = pixels.expand(2, -1, -1, -1).contiguous()
    for m in methods:
        counter = [0]
        with counting(ex.adapter, counter):
            ex.explain(pair, method=m)
        print(f"{m:>14} {counter[0] / 2:9.1f}")
        record["sequences"][m] = counter[0] / 2
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
