"""SmolLM2: integrated gradients at the token embeddings from the pad token at every position, and the
same with each prompt's first token (the attention sink) kept; Gauss-Legendre 16, 64, 256 nodes; the
first two prompts of attribution-error/prompts.txt (docs/results/attribution-error.md).

    PYTHONPATH=src python docs/results/attribution_error_sink.py
"""

import json

import torch

from attngrad.lm import LMExplainer
from attngrad.lm.ig import lm_integrated_gradients

ex = LMExplainer.from_pretrained(None)
prompts = [p.strip() for p in open("docs/results/attribution-error/prompts.txt") if p.strip()][:2]
for text in prompts:
    batch = ex.encode([text])
    emb = ex.adapter.embed(batch.input_ids)
    tok = ex.adapter.tokenizer
    pad = ex.adapter.embed(torch.full_like(batch.input_ids, tok.pad_token_id if tok.pad_token_id is not None else ex.adapter.pad_id))
    keep = pad.clone()
    keep[:, 0] = emb[:, 0]
    for name, base in [("pad", "pad"), ("pad, first token kept", keep)]:
        for steps in (16, 64, 256):
            r = lm_integrated_gradients(ex, [text], baseline=base, steps=steps, rule="gauss_legendre", batch_size=64).result.error()
            print(json.dumps({"prompt": text, "baseline": name, "steps": steps, "target": float(r["target"][0]), "total": float(r["total"][0]), "relative": float(r["relative"][0])}), flush=True)
