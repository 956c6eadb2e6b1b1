"""AttnLRP written from the paper's rules (Achtibat et al., ICML 2024), independently of attngrad.lm.attnlrp.

One prompt, unpadded, float64, the model's weights read from its state dict. The forward pass
is recomputed by hand; relevance goes back layer by layer and head by head with explicit
fractions ``x_i w_ij / z_j`` (epsilon rule, epsilon -> 0), the identity rule on norms and
activations, the uniform rule (halves) on ``Q K^T``, ``A V`` and the gated product, and the
softmax rule ``R_in = x (R_out - s Σ R_out)``. No autograd anywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _lin(x, w, r, b=None):
    """Epsilon rule through ``z = x @ w.T + b``: ``R_x = x * ((R / z) @ w)``."""
    z = x @ w.T + (0 if b is None else b)
    return x * ((r / z) @ w)


def _attention_back(q, k, v, r_out, scale):
    """One head, causal: (R_q, R_k, R_v, A, R_A) from the relevance of ``A V`` (N, d)."""
    n = q.shape[0]
    s = (q @ k.T) * scale
    s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    a = torch.softmax(s, dim=-1)
    o = a @ v
    ratio = r_out / o
    r_a = torch.zeros(n, n, dtype=q.dtype)
    r_q, r_k, r_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for i in range(n):
        for j in range(i + 1):
            share = a[i, j] * v[j] * ratio[i] / 2  # uniform rule: half to A, half to V
            r_a[i, j] = share.sum()
            r_v[j] += share
    r_s = torch.zeros(n, n, dtype=q.dtype)
    for i in range(n):
        r_s[i, : i + 1] = s[i, : i + 1] * (r_a[i, : i + 1] - a[i, : i + 1] * r_a[i, : i + 1].sum())
    for i in range(n):
        for j in range(i + 1):
            frac = q[i] * k[j] / (q[i] @ k[j])
            r_q[i] += frac * r_s[i, j] / 2  # uniform rule: half to Q, half to K
            r_k[j] += frac * r_s[i, j] / 2
    return r_q, r_k, r_v, a, r_a


def _split_residual(x, f, r):
    total = x + f
    return x / total * r, f / total * r


def llama(model, ids, target):
    """(R over input embeddings (N,), [R_A per layer (H, N, N)]) for a Llama-family model."""
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    cfg = model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // heads
    n = len(ids)
    x = p["model.embed_tokens.weight"][torch.tensor(ids)]
    with torch.no_grad():
        cos, sin = model.model.rotary_emb(x[None].float(), torch.arange(n)[None])
    cos, sin = cos[0].double(), sin[0].double()
    rot = torch.zeros(hd, hd, dtype=torch.float64)  # rotate_half as q @ rot
    for j in range(hd // 2):
        rot[hd // 2 + j, j] = -1.0
        rot[j, hd // 2 + j] = 1.0
    rope = [torch.diag(cos[i]) + rot @ torch.diag(sin[i]) for i in range(n)]

    def norm(h, w):
        return w * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    saved = []
    for layer in range(cfg.num_hidden_layers):
        pre = f"model.layers.{layer}."
        y = norm(x, p[pre + "input_layernorm.weight"])
        q = y @ p[pre + "self_attn.q_proj.weight"].T
        k = y @ p[pre + "self_attn.k_proj.weight"].T
        v = y @ p[pre + "self_attn.v_proj.weight"].T
        qh = [torch.stack([q[i, h * hd:(h + 1) * hd] @ rope[i] for i in range(n)]) for h in range(heads)]
        kh = [torch.stack([k[i, h * hd:(h + 1) * hd] @ rope[i] for i in range(n)]) for h in range(kv)]
        vh = [v[:, h * hd:(h + 1) * hd] for h in range(kv)]
        outs = []
        for h in range(heads):
            s = (qh[h] @ kh[h // (heads // kv)].T) / math.sqrt(hd)
            s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
            outs.append(torch.softmax(s, -1) @ vh[h // (heads // kv)])
        cat = torch.cat(outs, dim=1)
        o = cat @ p[pre + "self_attn.o_proj.weight"].T
        mid = x + o
        y2 = norm(mid, p[pre + "post_attention_layernorm.weight"])
        g = y2 @ p[pre + "mlp.gate_proj.weight"].T
        u = y2 @ p[pre + "mlp.up_proj.weight"].T
        prod = F.silu(g) * u
        m = prod @ p[pre + "mlp.down_proj.weight"].T
        saved.append((x, y, q, k, v, qh, kh, vh, cat, o, mid, y2, g, u, prod, m))
        x = mid + m
    final = norm(x, p["model.norm.weight"])
    logits = final[-1] @ p["lm_head.weight"].T
    r = torch.zeros_like(final)
    r[-1] = _lin(final[-1:], p["lm_head.weight"][target:target + 1], logits[target:target + 1][None])[0]
    r_attn = [None] * cfg.num_hidden_layers
    for layer in reversed(range(cfg.num_hidden_layers)):
        pre = f"model.layers.{layer}."
        x, y, q, k, v, qh, kh, vh, cat, o, mid, y2, g, u, prod, m = saved[layer]
        r_mid, r_m = _split_residual(mid, m, r)
        r_prod = _lin(prod, p[pre + "mlp.down_proj.weight"], r_m)
        r_act, r_u = r_prod / 2, r_prod / 2  # uniform rule on act(g) * u
        r_g = r_act  # identity rule on the activation
        r_y2 = _lin(y2, p[pre + "mlp.gate_proj.weight"], r_g) + _lin(y2, p[pre + "mlp.up_proj.weight"], r_u)
        r_mid = r_mid + r_y2  # identity rule on the norm
        r_x, r_o = _split_residual(x, o, r_mid)
        r_cat = _lin(cat, p[pre + "self_attn.o_proj.weight"], r_o)
        r_q, r_k, r_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        maps = []
        for h in range(heads):
            c = h // (heads // kv)
            rq, rk, rv, _, ra = _attention_back(qh[h], kh[c], vh[c], r_cat[:, h * hd:(h + 1) * hd], 1 / math.sqrt(hd))
            maps.append(ra)
            for i in range(n):  # epsilon rule back through the rotation
                r_q[i, h * hd:(h + 1) * hd] += q[i, h * hd:(h + 1) * hd] * (rope[i] @ (rq[i] / qh[h][i]))
                r_k[i, c * hd:(c + 1) * hd] += k[i, c * hd:(c + 1) * hd] * (rope[i] @ (rk[i] / kh[c][i]))
            r_v[:, c * hd:(c + 1) * hd] += rv
        r_attn[layer] = torch.stack(maps)
        r_y = (_lin(y, p[pre + "self_attn.q_proj.weight"], r_q) + _lin(y, p[pre + "self_attn.k_proj.weight"], r_k)
               + _lin(y, p[pre + "self_attn.v_proj.weight"], r_v))
        r = r_x + r_y
    return r.sum(dim=-1), r_attn


def gpt2(model, ids, target):
    """(R over input embeddings (N,), [R_A per layer (H, N, N)]) for GPT-2."""
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    cfg = model.config
    heads, d = cfg.n_head, cfg.n_embd
    hd = d // heads
    n = len(ids)
    e = p["transformer.wte.weight"][torch.tensor(ids)]
    x = e + p["transformer.wpe.weight"][:n]

    def ln_matrix(h, w):
        std = torch.sqrt(h.var(-1, unbiased=False) + cfg.layer_norm_epsilon)
        centre = torch.eye(d, dtype=torch.float64) - 1.0 / d
        return [(centre @ torch.diag(w) / std[i]).T for i in range(n)]  # y_i = mats[i] @ h_i + b

    def ln(h, w, b):
        mats = ln_matrix(h, w)
        return torch.stack([mats[i] @ h[i] for i in range(n)]) + b, mats

    def ln_back(h, mats, b, r):
        return torch.cat([_lin(h[i:i + 1], mats[i], r[i:i + 1], b) for i in range(n)])

    def act(z):
        return 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z.pow(3))))

    saved = []
    for layer in range(cfg.n_layer):
        pre = f"transformer.h.{layer}."
        y, m1 = ln(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        qkv = y @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        outs = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            s = (q[:, sl] @ k[:, sl].T) / math.sqrt(hd)
            s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
            outs.append(torch.softmax(s, -1) @ v[:, sl])
        cat = torch.cat(outs, dim=1)
        o = cat @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        mid = x + o
        y2, m2 = ln(mid, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        f = y2 @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"]
        a = act(f)
        m = a @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
        saved.append((x, y, m1, qkv, q, k, v, cat, o, mid, y2, m2, f, a, m))
        x = mid + m
    final, mf = ln(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    logits = final[-1] @ p["transformer.wte.weight"].T
    r_final = torch.zeros_like(final)
    r_final[-1] = _lin(final[-1:], p["transformer.wte.weight"][target:target + 1], logits[target:target + 1][None])[0]
    r = ln_back(x, mf, p["transformer.ln_f.bias"], r_final)
    r_attn = [None] * cfg.n_layer
    for layer in reversed(range(cfg.n_layer)):
        pre = f"transformer.h.{layer}."
        x, y, m1, qkv, q, k, v, cat, o, mid, y2, m2, f, a, m = saved[layer]
        r_mid, r_m = _split_residual(mid, m, r)
        r_a = _lin(a, p[pre + "mlp.c_proj.weight"].T, r_m, p[pre + "mlp.c_proj.bias"])
        r_y2 = _lin(y2, p[pre + "mlp.c_fc.weight"].T, r_a, p[pre + "mlp.c_fc.bias"])  # identity rule on GELU
        r_mid = r_mid + ln_back(mid, m2, p[pre + "ln_2.bias"], r_y2)
        r_x, r_o = _split_residual(x, o, r_mid)
        r_cat = _lin(cat, p[pre + "attn.c_proj.weight"].T, r_o, p[pre + "attn.c_proj.bias"])
        parts, maps = [torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)], []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            rq, rk, rv, _, ra = _attention_back(q[:, sl], k[:, sl], v[:, sl], r_cat[:, sl], 1 / math.sqrt(hd))
            parts[0][:, sl], parts[1][:, sl], parts[2][:, sl] = rq, rk, rv
            maps.append(ra)
        r_attn[layer] = torch.stack(maps)
        r_y = _lin(y, p[pre + "attn.c_attn.weight"].T, torch.cat(parts, dim=1), p[pre + "attn.c_attn.bias"])
        r = r_x + ln_back(x, m1, p[pre + "ln_1.bias"], r_y)
    r_e, _ = _split_residual(e, p["transformer.wpe.weight"][:n], r)
    return r_e.sum(dim=-1), r_attn
