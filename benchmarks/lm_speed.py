"""Speed and peak memory of ``complete`` on a causal LM against one plain forward + backward.

For each prompt length (random token ids, batch 1) and each case, a fresh subprocess runs:
- ``fwd_bwd``: the same eager model, one forward (no attention maps returned) and one
  backward of the target logit to the token embeddings, weights frozen — the floor;
- ``complete``: ``LMExplainer.explain(method="complete")``: one forward with the maps and one
  backward whose hooks fold each layer's weighting into the read row as its gradient arrives;
- ``complete_maps``: the same with ``streaming="maps"``: fused attention in the forward pass and each
  layer's maps recomputed from its queries and keys when its gradient arrives (one layer's maps at a time);
- ``complete_layers``: ``streaming="layers"``: every decoder layer recomputed in the backward pass
  (activation checkpointing), so one layer's maps and only the layers' inputs are in memory;
- ``fwd_bwd_sdpa`` (``--sdpa``): the plain forward + backward with PyTorch's fused attention, which
  never forms the N x N maps (the floor of a model that is not explained);
- ``complete_all_grads`` (``--naive``): the straightforward way, ``torch.autograd.grad`` to every
  layer's map at once, then the rollout (what the hooks avoid holding).
Time: median of ``--repeat`` runs after one warm-up. Peak memory: on CUDA the allocator's
peak; on CPU the peak resident set (VmHWM, reset after loading the model) minus the resident set then.
Targets: complete <= 1.15x fwd_bwd at 256 and 1024 tokens (issue 13); streaming <= 1.5x fwd_bwd at
1,024 tokens and its peak <= 1.3x a plain forward + backward's at 2,048 (issue 21; the fused ``fwd_bwd_sdpa``
is the fair floor for memory, since the eager ``fwd_bwd`` itself keeps every layer's maps).

    python benchmarks/lm_speed.py [--model DIR] [--lengths 256,1024] [--repeat 3] [--naive] [--sdpa] [--device cuda] [--json out.json]
    python benchmarks/lm_speed.py --lengths 2048 --repeat 1        # the long case, once
    python benchmarks/lm_speed.py --lengths 8192 --repeat 0 --cases fwd_bwd_sdpa,complete_maps   # the longest
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from _timing import write_json  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM) since the last :func:`_reset_peak`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Reset VmHWM to the current resident set (Linux: write 5 to /proc/self/clear_refs), so that
    loading the model does not count in the peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def one_case(model: str | None, device: str, length: int, case: str, repeat: int) -> dict:
    """Run one case in this process; returns seconds (median) and peak MB above the loaded model."""
    from attngrad.lm import LMExplainer
    from attngrad.lm.attribution import run
    from attngrad.losses import get_loss
    from attngrad.methods import Complete
    from attngrad.methods.rollout import fold

    lm = LMExplainer.from_pretrained(model, device=device, quiet=True)
    adapter = lm.adapter
    dev = torch.device(device)
    torch.manual_seed(0)
    vocab = adapter.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(100, vocab, (length,)).tolist()
    batch = adapter.batch([ids])
    target = 42
    base_rss = _rss_mb()
    _reset_peak()

    def fwd_bwd():
        x = adapter.embed(batch.input_ids).requires_grad_(True)
        with adapter.frozen_weights():
            logits = adapter.forward(x, batch, attentions=False).logits
            torch.autograd.grad(logits[:, target].sum(), x)

    def complete(streaming: bool | str = False):
        run(adapter, batch, ["complete"], get_loss("logit"),
            lambda logits: (torch.full((1,), target, device=logits.device), None), streaming=streaming)

    def fwd_bwd_sdpa():
        adapter.model.set_attn_implementation("sdpa")
        try:
            fwd_bwd()
        finally:
            adapter.model.set_attn_implementation("eager")

    def complete_all_grads():
        x = adapter.embed(batch.input_ids).requires_grad_(True)
        with adapter.frozen_weights():
            out = adapter.forward(x, batch)
            logits, maps = out.logits, out.attentions
            grads = torch.autograd.grad(logits[:, target].sum(), maps)
        row = torch.zeros(1, 1, length, device=dev)
        row[:, 0, -1] = 1
        method = Complete()
        with torch.no_grad():
            for a, g in zip(reversed(maps), reversed(grads)):
                row = fold(row, method.mix(a, g))
        return row

    fn = {"fwd_bwd": fwd_bwd, "fwd_bwd_sdpa": fwd_bwd_sdpa, "complete": complete,
          "complete_maps": lambda: complete(streaming="maps"), "complete_layers": lambda: complete(streaming="layers"),
          "complete_all_grads": complete_all_grads}[case]
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    for i in range(repeat + 1 if repeat else 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i or repeat == 0:  # the first run is the warm-up (unless it is the only one)
            times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(dev) - base_cuda) / 2**20
    else:
        peak = _peak_rss_mb() - base_rss
    return {"case": case, "length": length, "seconds": statistics.median(times), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="causal LM folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", default="256,1024")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--naive", action="store_true", help="also time the all-gradients-at-once complete")
    parser.add_argument("--sdpa", action="store_true", help="also time a plain forward + backward with fused attention")
    parser.add_argument("--cases", default=None, help="comma-separated cases to run (default: all that apply)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_length", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._case:  # child process: one measurement
        print(json.dumps(one_case(args.model, args.device, args._length, args._case, args.repeat)))
        return
    cases = (["fwd_bwd"] + (["fwd_bwd_sdpa"] if args.sdpa else []) + ["complete", "complete_maps", "complete_layers"]
             + (["complete_all_grads"] if args.naive else []))
    if args.cases:
        cases = args.cases.split(",")
    rows = []
    for length in [int(n) for n in args.lengths.split(",")]:
        found = {}
        for case in cases:
            cmd = [sys.executable, __file__, "--device", args.device, "--repeat", str(args.repeat),
                   "--_case", case, "--_length", str(length)] + (["--model", args.model] if args.model else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"case {case} at {length} tokens failed")
            found[case] = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(found[case])
        base, fused = found.get("fwd_bwd"), found.get("fwd_bwd_sdpa")
        for case in cases:
            r = found[case]
            ratios = ""
            if base:
                r["ratio"] = r["seconds"] / base["seconds"]
                r["peak_ratio"] = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
                ratios = f"x{r['ratio']:.2f} time  x{r['peak_ratio']:.2f} peak"
            if fused:
                r["peak_ratio_sdpa"] = r["peak_mb"] / fused["peak_mb"] if fused["peak_mb"] > 0 else float("nan")
                ratios += f"  x{r['peak_ratio_sdpa']:.2f} peak of fwd_bwd_sdpa"
            print(f"{length:5d} tokens  {case:19s} {r['seconds']:8.3f} s  peak {r['peak_mb']:8.0f} MB  {ratios}",
                  flush=True)
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
