"""Cost of ``attnlrp`` and ``tattr`` on a causal LM against one plain forward + backward.

For each prompt length (random token ids, batch ``--batch``): ``fwd_bwd`` is the same eager
model, one forward (no maps) and one backward of the target logit to the token embeddings,
weights frozen; the explanation is the explainer's pass for ``[method]`` on the same batch
(``attngrad.lm.explainer._run``: what ``explain_methods`` runs per batch, without tokenising). Median of
``--repeat`` interleaved runs after two warm-ups (benchmarks/_timing.py). Target (issue 22):
attnlrp <= 2x fwd_bwd.

    python benchmarks/lm_lrp_speed.py [--model DIR] [--lengths 128,512] [--batch 1] [--repeat 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="causal LM folder or Hub name (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--lengths", default="128,512")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--methods", default="attnlrp,tattr")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    from attngrad.lm import LMExplainer
    from attngrad.lm.explainer import _run
    from attngrad.losses import get_loss

    loss = get_loss("logit")

    lm = LMExplainer.from_pretrained(args.model, device=args.device)
    adapter = lm.adapter
    vocab = int(adapter.model.get_output_embeddings().weight.shape[0])
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in (int(x) for x in args.lengths.split(",")):
        seqs = [torch.randint(3, vocab, (n,), generator=gen).tolist() for _ in range(args.batch)]
        batch = adapter.batch(seqs)
        target = [int(s[-1]) for s in seqs]
        chosen = (torch.tensor(target, device=adapter.device), None)

        def choose(logits: torch.Tensor, chosen=chosen) -> tuple:
            return chosen

        def base(batch=batch, target=target) -> None:
            with adapter.frozen_weights():
                x = adapter.embed(batch.input_ids).requires_grad_(True)
                logits = adapter.forward(x, batch, attentions=False).logits
                torch.autograd.grad(logits[torch.arange(len(target)), target].sum(), x)
            if adapter.device.type == "cuda":
                torch.cuda.synchronize()

        for method in args.methods.split(","):
            def explain(method: str = method, batch=batch, choose=choose) -> None:
                _run(adapter, batch, [method], loss, choose, start_layer=0)
                if adapter.device.type == "cuda":
                    torch.cuda.synchronize()

            row = {"length": n, "batch": args.batch, "method": method, **ratio(base, explain, args.repeat)}
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
