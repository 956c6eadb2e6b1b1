"""Grad-ECLIP (Zhao et al., ICML 2024) and Attention-ECLIP: one map, two computations.

Grad-ECLIP (Zhao, Wang, Zeng, Zhao & Chan, "Gradient-based Visual Explanation for CLIP";
authors' code ``Cyang-Zhao/Grad-Eclip``, ``grad_eclip_image.ipynb``, functions ``grad_eclip``
and ``sim_qk``) explains a similarity ``S`` from the last attention layer. With ``r`` the read
row (CLS, or a text's end-of-text token), ``o_r`` the heads' concatenated output at ``r``
(the input of the output projection), ``w = dS/do_r`` (channel weights), ``v_j`` token ``j``'s
value vector and ``lambda_j`` a spatial weight, the map is

    H_j = ReLU( sum_c  w_c * v_j^c * lambda_j ).

The authors' ``lambda_j`` is the "loosened attention": the cosine of the query at ``r`` and the
key at ``j`` (whole width), min-max normalised over the scored tokens.

Attention-ECLIP computes the same map from the attention map and its gradient alone. Per head
``h``, ``o_r^h = sum_j A^h[r, j] v_j^h``, so ``dS/dA^h[r, j] = sum_{c in h} w_c v_j^c``: summed
over heads that *is* the feature-gradient product above, and

    H_j = ReLU( lambda_j * sum_h  grad A^h(L)[r, j] ).

Both take ``attention``: ``"loosened"`` (default, the authors' choice), ``"softmax"`` (the
model's own per-head attention ``A^h[r, j]`` as the weight, inside the head sum: Attention-ECLIP
is then the last layer of the ``complete`` weighting, clamped) or ``"none"`` (``lambda = 1``; the
authors' ``withksim=False``).

Differences from the authors' code, on purpose: their notebook recomputes the last layer with a
single head over the whole width (a forward the model does not run); here the model's own
multi-head layer is used (the loosened cosine still spans the whole width, as theirs). Their
text map is divided by its sum for display; raw scores are kept here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import AttngradError
from ..methods.base import Method, Trace

ATTENTION_WEIGHTS = ("loosened", "softmax", "none")


def read_rows(trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
    """The read row per item (B,) and the scored columns (B, N) bool, from ``trace.extras``.

    :class:`~attngrad.clip.ClipExplainer` stores ``positions`` and ``columns``; without them the
    trace's ``token`` row is read and every non-special column is scored.
    """
    batch, _, n, _ = trace.attentions[-1].shape
    device = trace.attentions[-1].device
    positions = trace.extras.get("positions")
    if positions is None:
        if not isinstance(trace.token, int):
            raise AttngradError("gradeclip and attention_eclip read one token's row; this model pools every token")
        positions = torch.full((batch,), trace.token, dtype=torch.long, device=device)
    columns = trace.extras.get("columns")
    if columns is None:
        columns = (torch.arange(n, device=device) >= trace.num_prefix_tokens).expand(batch, n)
    return positions, columns


def loosened_attention(query: torch.Tensor, key: torch.Tensor, positions: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``lambda`` (B, N): ``cos(q_r, k_j)`` min-max normalised over the scored columns (0 elsewhere).

    Zhao et al.'s loosened attention (``sim_qk`` in ``grad_eclip_image.ipynb``).
    """
    rows = torch.arange(query.shape[0], device=query.device)
    cos = (F.normalize(query[rows, positions], dim=-1).unsqueeze(1) * F.normalize(key, dim=-1)).sum(-1)
    big = torch.finfo(cos.dtype).max
    low = cos.masked_fill(~columns, big).amin(dim=1, keepdim=True)
    high = cos.masked_fill(~columns, -big).amax(dim=1, keepdim=True)
    return ((cos - low) / (high - low).clamp(min=torch.finfo(cos.dtype).tiny)) * columns


class _Eclip(Method):
    """Shared capture: the last layer's queries and keys (and, for Grad-ECLIP, values and output)."""

    signed = False
    needs_values = False

    def __init__(self, attention: str = "loosened"):
        if attention not in ATTENTION_WEIGHTS:
            raise AttngradError(f"attention weight {attention!r} is unknown; use one of {', '.join(ATTENTION_WEIGHTS)}")
        self.attention = attention

    @contextmanager
    def capture(self, adapter, extras: dict[str, Any]) -> Iterator[None]:
        parts_of = getattr(adapter, "attention_parts", None)
        if parts_of is None:
            raise AttngradError(f"method {self.name!r} needs a model whose last attention layer can be read (a CLIP tower)")
        parts = parts_of()
        extras["heads"] = parts.heads
        handles = []

        def keep(name):
            def hook(module, args, output):
                extras[name] = output.detach()
            return hook

        handles.append(parts.query.register_forward_hook(keep("query")))
        handles.append(parts.key.register_forward_hook(keep("key")))
        if self.needs_values:
            handles.append(parts.value.register_forward_hook(keep("value")))

            def out_input(module, args):
                heads_out = args[0]
                if heads_out.requires_grad:
                    heads_out.register_hook(lambda grad: extras.__setitem__("out_grad", grad.detach()))

            handles.append(parts.out.register_forward_pre_hook(out_input))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def spatial(self, trace: Trace, positions: torch.Tensor, columns: torch.Tensor) -> torch.Tensor | None:
        """``lambda`` (B, N) for ``loosened``, ``None`` otherwise."""
        if self.attention != "loosened":
            return None
        return loosened_attention(trace.extras["query"], trace.extras["key"], positions, columns)

    def finish(self, per_head: torch.Tensor, trace: Trace, positions: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``per_head`` (B, H, N): the head-wise products ``dS/dA^h[r, j]`` -> the map (B, N)."""
        if self.attention == "softmax":
            rows = torch.arange(per_head.shape[0], device=per_head.device)
            per_head = per_head * trace.attentions[-1][rows, :, positions]
        total = per_head.sum(dim=1)
        lam = self.spatial(trace, positions, columns)
        if lam is not None:
            total = total * lam
        return total.clamp(min=0) * columns


class GradEclip(_Eclip):
    """Grad-ECLIP (Zhao et al., ICML 2024): value features x channel gradient x loosened attention.

    Args:
        attention: spatial weight ``"loosened"`` (default), ``"softmax"`` or ``"none"`` (module docstring).
    """

    name = "gradeclip"
    needs_values = True

    def token_scores(self, trace: Trace) -> torch.Tensor:
        positions, columns = read_rows(trace)
        if "out_grad" not in trace.extras or "value" not in trace.extras:
            raise AttngradError("gradeclip found no gradient at the last attention layer's output; the pass needs gradients")
        value, grad = trace.extras["value"], trace.extras["out_grad"]
        batch, n, width = value.shape
        heads = trace.extras["heads"]
        rows = torch.arange(batch, device=value.device)
        w = grad[rows, positions]  # (B, D): dS/do_r
        per_head = (w.unsqueeze(1) * value).reshape(batch, n, heads, width // heads).sum(-1)  # (B, N, H)
        return self.finish(per_head.transpose(1, 2), trace, positions, columns)


class AttentionEclip(_Eclip):
    """Attention-ECLIP: Grad-ECLIP's map from ``grad A`` of the last layer (module docstring).

    Args:
        attention: spatial weight ``"loosened"`` (default), ``"softmax"`` or ``"none"``.
    """

    name = "attention_eclip"

    def token_scores(self, trace: Trace) -> torch.Tensor:
        if trace.gradients is None:
            raise AttngradError("attention_eclip needs the gradients of the attention maps")
        positions, columns = read_rows(trace)
        grad = trace.gradients[-1]
        rows = torch.arange(grad.shape[0], device=grad.device)
        return self.finish(grad[rows, :, positions], trace, positions, columns)

    @contextmanager
    def capture(self, adapter, extras: dict[str, Any]) -> Iterator[None]:
        if self.attention != "loosened":  # grad A (and A) come with every trace
            yield
            return
        with super().capture(adapter, extras):
            yield
