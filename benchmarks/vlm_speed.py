"""Speed of a VLM explanation against one plain forward + backward of the whole model (the stand-in's architecture).

The base is what any gradient explanation must pay: the model's forward on the batch (eager
attention, as the explanation runs it) and the backward of the target logits to the pixels,
weights frozen. The explanation is ``explain_methods`` with the given methods and both readings
(all from one forward + one backward). Interleaved repeats, medians.

    python benchmarks/vlm_speed.py --batch-size 4 --repeats 5 [--json]
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import ratio  # type: ignore[import-not-found]

from attngrad.vlm import VLMAdapter, VLMExplainer
from attngrad.vlm.load import build_stand_in

QUESTION = "What is in this photo?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", default="complete")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # the stand-in's architecture (ViT-Ti at 128 px + SmolLM2-135M + LLaVA's projector); speed does not depend
    # on the projector's weights, so its random initialisation serves
    model, tokenizer, preprocess = build_stand_in(projector=False, quiet=True)
    ex = VLMExplainer(VLMAdapter(model, tokenizer), preprocess=preprocess)
    ex.batch_size = args.batch_size
    pixels = ex.pixels(["el1", "catdog", "tusker", "snail"] * ((args.batch_size + 3) // 4))[: args.batch_size]
    methods = [m.strip() for m in args.methods.split(",")]
    result = measure(ex, pixels, QUESTION, methods, args.repeats)
    print(json.dumps(result, indent=1) if args.json else
          f"batch {args.batch_size}, {','.join(methods)}: forward+backward {result['forward_backward_s']:.3f} s, "
          f"explanation {result['explanation_s']:.3f} s, ratio {result['ratio']:.2f}")


def measure(ex: VLMExplainer, pixels: torch.Tensor, question: str, methods: list[str], repeats: int) -> dict:
    """Interleaved timings of ``methods`` (both readings, one pass) against one forward + backward of the whole VLM
    on the same batch (the target logit, weights frozen): any family, through the adapter's own inputs."""
    a = ex.adapter
    ids, start = a.prompt_ids(question)
    batch = a.batch([ids] * len(pixels), [start] * len(pixels))

    def base():
        px = pixels.clone().requires_grad_(True)
        with a.frozen_weights():
            logits = a.model(**a.inputs(px, batch), use_cache=False).logits[:, -1]
            logits.gather(1, logits.argmax(-1, keepdim=True)).sum().backward()

    def explain():
        ex.explain_methods(pixels, question, methods, readings=["language", "vision"])

    return ratio(base, explain, repeats) | {"batch_size": len(pixels), "methods": methods,
                                            "image_tokens": a.num_image_tokens, "threads": torch.get_num_threads()}

if __name__ == "__main__":
    main()
