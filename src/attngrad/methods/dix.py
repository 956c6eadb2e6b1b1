"""DIX, Deep Integrated Explanations (Barkan, Elisha, Weill, Asher, Eshel & Koenigstein, CIKM 2023).

Follows the authors' code for ViTs (``dix-cikm23/dix``, ``vit_saliency_map_generator.py``:
``get_dix_vit``, ``avg_heads_dix``, ``rollout``, ``compute_rollout_attention``, and the DIX
branch of ``handle_transformers``; the model override in ``vit_model/ViTmodel.py``,
``VisionTransformer.forward(attn_prob=, layer_num=)``):

1. the image's attention maps ``A(l)`` (one pass; here the shared trace);
2. for each chosen block ``b`` (the authors: the last two, ``layer_num`` 1 and 2 counted from the
   end) and each ``alpha_s = s/S``, s = 0..S (``get_interpolated_values(0, A, S)``, ``S`` =
   ``ITERATION_STEPS`` = 10, so 11 points, alpha = 0 included), one forward pass of the unchanged
   image in which block ``b``'s attention probabilities are replaced by ``alpha_s · A(L-1)`` —
   the *last* block's map for either block (their ``iatn[-1]``; ``own_maps=True`` uses block
   ``b``'s own map instead) — and one backward pass of the target logit;
3. in that pass, per block ``l`` and head ``h``: ``C_s(l, h) = max(grad A_h(l) ⊙ A_h(l), 0)``
   with the maps and gradients of that pass (block ``b``: the scaled map);
4. ``Abar(l) = mean_h mean_s C_s(l, h)``; ``M(l) = (Abar(l) + I)`` with every row divided by its
   sum; ``R = M(L-1) ··· M(0)``; the map is row 0 (CLS) of ``R`` at the patch columns;
5. DIX = the sum of the maps of the chosen blocks.

Differences: the images of a batch and all their ``alpha`` steps go through the model together
(``batch_size`` sequences per pass, whole images with all their steps) instead of one pass per step and image, and the blocks before
block ``b`` (which see the unchanged image in every step) run once per image, their per-step
gradients carried back as one batched vector-Jacobian product; the authors' final
min-max normalisation (``blend_transformer_heatmap``) is left out (monotone; maps here are raw).
The attention override goes through the adapter (hooks or transformers' attention interface),
not a patched model copy.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import AttngradError
from ._blocks import branch_at_block
from ._common import check_positive
from .base import Method, Trace, register


def normalised_rollout(maps: Sequence[torch.Tensor], token: int) -> torch.Tensor:
    """Row ``token`` (B, N) of ``M(L-1) ··· M(0)``, ``M(l) = (maps[l] + I)`` row-normalised
    (the authors' ``compute_rollout_attention`` with ``start_layer=0``)."""
    eye = torch.eye(maps[0].shape[-1], dtype=maps[0].dtype, device=maps[0].device)
    steps = [(m + eye) / (m + eye).sum(dim=-1, keepdim=True) for m in maps]
    row = steps[-1][:, token : token + 1]
    for step in reversed(steps[:-1]):
        row = torch.bmm(row, step)
    return row[:, 0]


@register
class DIX(Method):
    """Deep integrated explanations: gradient ⊙ attention, integrated over a scaled attention map
    of one of the last blocks, rolled out; summed over those blocks.

    Args:
        blocks: which blocks get the scaled map, counted from the end as the authors do
            (1 = the last block; default ``(1, 2)``, their DIX branch adds the two maps).
        steps: interpolation intervals S (default 10, the authors' ``ITERATION_STEPS``); the
            passes use the S + 1 points alpha = 0, 1/S, ..., 1.
        own_maps: scale block ``b``'s own attention map instead of the last block's (the
            authors' code uses the last block's map for every ``b``; default ``False``).
        batch_size: sequences per forward pass (default 64): ``batch_size // (steps + 1)`` images go
            through the model together, each with all its steps (at least one image, so a
            ``batch_size`` below ``steps + 1`` still runs ``steps + 1`` sequences per pass).

    Cost per image: 1 forward (shared trace) + ``len(blocks) · (steps + 1)`` forward and
    backward passes (22 with the defaults; the authors' code: 24, one image and step at a time),
    of which the blocks before the replaced one run their forward pass once per image and block
    ``b``, not once per step (``OMP_NUM_THREADS=1 python benchmarks/tattr_speed.py --methods dix
    --batch 8 --repeats 3 --cpu-time``: 16.4x a forward+backward, 25.6x with every step's own forward).
    """

    name = "dix"
    needs_gradients = False
    signed = False
    description = "Deep integrated explanations (Barkan et al., CIKM 2023): grad x attention integrated over a scaled map"

    def __init__(
        self, *, blocks: Sequence[int] = (1, 2), steps: int = 10, own_maps: bool = False, batch_size: int = 64
    ):
        self.blocks = tuple(blocks)
        self.steps = steps
        self.own_maps = own_maps
        self.batch_size = batch_size
        check_positive(self.name, steps=steps, batch_size=batch_size)
        if not self.blocks or any(not isinstance(b, int) or b < 1 for b in self.blocks):
            raise AttngradError(f"{self.name}: blocks are counted from the end, 1 = the last block; got {blocks!r}")

    def token_scores(self, trace: Trace) -> torch.Tensor:
        token = trace.token
        if not isinstance(token, int):
            raise AttngradError(f"{self.name} reads one token's row (an image model's CLS); this model pools every token")
        layers = len(trace.attentions)
        if max(self.blocks) > layers:
            raise AttngradError(
                f"{self.name}: block {max(self.blocks)} from the end does not exist; this model has {layers} blocks"
            )
        total = None
        for block in self.blocks:
            row = normalised_rollout(self._integrated_cams(trace, layers - block), token)
            total = row if total is None else total + row
        assert total is not None
        return total

    def _integrated_cams(self, trace: Trace, layer: int) -> list[torch.Tensor]:
        """``Abar(l)`` (B, N, N) for every layer: mean over steps and heads of max(grad ⊙ A, 0),
        with ``layer``'s map replaced by ``alpha · source`` in each pass.

        The blocks before ``layer`` see the unchanged image in every step, so they run once per image
        (:func:`branch_at_block`); the blocks from ``layer`` on run once per step. The steps' gradients at
        ``layer``'s input are carried back through the shared earlier blocks as one batched vector-Jacobian
        product (``is_grads_batched``): each step keeps its own gradient of every earlier map."""
        adapter, pixels = trace.adapter, trace.pixel_values.detach()
        source = trace.attentions[layer if self.own_maps else -1].detach()
        count, points = pixels.shape[0], self.steps + 1
        alphas = torch.linspace(0, 1, points, dtype=torch.float64).to(pixels.device, source.dtype)
        targets = trace.targets.to(pixels.device)
        sums = [torch.zeros_like(a[:, 0]) for a in trace.attentions]
        for images in torch.arange(count, device=pixels.device).split(max(1, self.batch_size // points)):
            k = len(images)
            scaled = source[images].repeat_interleave(points, dim=0) * alphas.repeat(k).view(-1, 1, 1, 1)
            maps: list[torch.Tensor | None] = [None] * len(trace.attentions)
            maps[layer] = scaled.requires_grad_(True)
            branch: list[torch.Tensor] = []  # block ``layer``'s input: per image, and per step (a leaf)
            with torch.enable_grad(), adapter.frozen_weights(), adapter.override_attention(maps), \
                    branch_at_block(adapter.model, layer, points, branch):
                out = adapter.forward(pixels[images].requires_grad_(True))
                if len(branch) != 2:
                    raise AttngradError(f"{self.name}: block {layer} ran {len(branch) // 2} times in one forward pass; "
                                        "this model's blocks cannot be branched")
                score = out.logits.gather(1, targets[images].repeat_interleave(points).view(-1, 1)).sum()
                *late, at_branch = torch.autograd.grad(score, [*out.attentions[layer:], branch[1]])
                early: tuple[torch.Tensor, ...] = ()
                if layer:  # (points, k, ...) cotangents, one per step, through the shared earlier blocks
                    per_step = at_branch.view(k, points, *at_branch.shape[1:]).transpose(0, 1)
                    early = torch.autograd.grad(branch[0], out.attentions[:layer], per_step, is_grads_batched=True)
            for i, (attn, grad) in enumerate(zip(out.attentions[:layer], early)):
                sums[i][images] += (grad * attn.detach()).clamp(min=0).mean(dim=2).sum(dim=0)
            for i, (attn, grad) in enumerate(zip(out.attentions[layer:], late), start=layer):
                cam = (grad * attn.detach()).clamp(min=0).mean(dim=1)
                sums[i][images] += cam.view(k, points, *cam.shape[1:]).sum(dim=1)
            del out, late, early, at_branch, branch, maps, scaled  # before the next chunk's pass
        return [s / points for s in sums]
