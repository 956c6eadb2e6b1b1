"""Independent computations of every method, written from the equations (method.md; Cui, Fan & Chen eqs. 1, 4-8).

One prompt at a time, unpadded, with the model's own default positions and mask; explicit
loops over layers and heads and the full matrix product ``R = (I + Abar(L)) ··· (I + Abar(1))``.
"""

from __future__ import annotations

import torch


def _loss(logits, target, contrast, loss):
    if loss == "logit":
        return logits[target]
    if loss == "diff":
        return logits[target] - logits[contrast]
    if loss == "normdiff":
        return (logits[target] - logits[contrast]) / logits[target]
    raise ValueError(loss)


def _weight(method, a, g):
    if method in ("rollout", "rollout_eq1"):
        return a
    if method == "complete":
        return g * a
    if method == "gae":
        return torch.clamp(g * a, min=0)
    if method == "absolute":
        return g.abs() * a
    raise ValueError(method)


def reference(model, ids, method, target, contrast=None, loss="logit", start_layer=0):
    """Scores (N,) of ``method`` for the token ids ``ids`` (one prompt) explaining token ``target``."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        x = model.get_input_embeddings()(torch.tensor([list(ids)])).detach().requires_grad_(True)
        out = model(inputs_embeds=x, output_attentions=True)
        maps = list(out.attentions)
        for a in maps:
            a.retain_grad()
        value = _loss(out.logits[0, -1], target, contrast, loss)
        value.backward()
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    n = len(ids)
    if method == "grad_x_input":
        return (x[0] * x.grad[0]).sum(dim=-1).detach()
    attns = [a[0].detach().double() for a in maps]
    grads = [a.grad[0].double() for a in maps]
    heads = attns[0].shape[0]
    if method == "raw_attention":
        row = torch.zeros(n, dtype=torch.float64)
        for h in range(heads):
            row += attns[-1][h, n - 1]
        return (row / heads).float()
    eye = torch.eye(n, dtype=torch.float64)
    r = eye.clone()
    for layer in range(start_layer, len(attns)):
        m = torch.zeros(n, n, dtype=torch.float64)
        for h in range(heads):
            m += _weight(method, attns[layer][h], grads[layer][h])
        abar = eye + m / heads
        if method == "rollout":  # renormalised rows (Abnar & Zuidema)
            abar = abar / abar.sum(dim=1, keepdim=True)
        r = abar @ r
    if method == "rollout":  # a distribution: read R itself (R - I would put -1 on the last token)
        return r[n - 1].float()
    return (r - eye)[n - 1].float()
