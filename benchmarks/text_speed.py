"""Text explanation time over forward + backward time, at batch 32 on CPU (target: <= 1.15).

Baseline ("forward + backward"): the least any attention-gradient method must do — the
model on the already tokenised, padded batch with eager attention and maps returned,
the task's loss, and one ``torch.autograd.grad`` of its sum to every layer's maps.
Explanation: the whole user call ``TextExplainer.explain_methods(texts, methods, ...)``,
tokenisation, word ids, the method maps and the result objects included.

Tasks on all-MiniLM-L6-v2 (``attngrad[text]``): similarity (32 pairs: 64 texts forwarded)
and zero-shot (32 texts, 3 label descriptions, their embeddings cached after the first call).
Runs alternate baseline / explanation so that load on a shared machine hits both; the
medians are compared.

    OMP_NUM_THREADS=1 python benchmarks/text_speed.py --threads 1 --repeats 10 --out text_speed.json
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import ratio

from attngrad.text import TextExplainer
from attngrad.text.deletion import sentence_pairs
from attngrad.text.explainer import _TaskView


def baseline(explainer: TextExplainer, texts: list[str], against: list[str] | None, labels: str | None):
    """Prepare the tokenised batch once; return a closure doing one forward + one backward to the maps."""
    task = explainer.task(against, labels)
    enc = explainer.encode(task.sequences(texts))
    view = _TaskView(explainer.adapter, task, enc.attention_mask)
    embeds = explainer.adapter.embed(enc.input_ids)

    def run() -> None:
        out = view.forward(embeds.detach().requires_grad_())
        loss = out.logits.max(dim=1).values.sum()
        torch.autograd.grad(loss, out.attentions)

    return run


def measure(explainer, texts, against, labels, methods, repeats):
    base = baseline(explainer, texts, against, labels)
    explain = lambda: explainer.explain_methods(texts, methods, against=against, labels=labels)  # noqa: E731
    return ratio(base, explain, repeats)  # two warm-up calls each (and the zero-shot label embeddings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="text model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    explainer = TextExplainer.from_pretrained(args.model, device=args.device)
    pairs = sentence_pairs()[:: max(1, len(sentence_pairs()) // args.batch)][: args.batch]
    a_texts, b_texts = [list(t) for t in zip(*pairs)]
    rows = []
    for task, against, labels in (("similarity", b_texts, None), ("zero-shot", None, "sports,finance,repair")):
        for methods in (["complete"], ["complete", "gae", "rollout"]):
            result = measure(explainer, a_texts, against, labels, methods, args.repeats)
            rows.append({"task": task, "methods": "+".join(methods), "batch": args.batch, **result})
            print(f"{task:10s} {'+'.join(methods):22s} forward+backward {result['forward_backward_s'] * 1000:7.1f} ms  "
                  f"explanation {result['explanation_s'] * 1000:7.1f} ms  ratio {result['ratio']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "device": args.device, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
