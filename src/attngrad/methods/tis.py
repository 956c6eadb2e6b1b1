"""TIS, Transformer Input Sampling (Englebert et al.,
"Explaining through Transformer Input Sampling", ICCV Workshops 2023).

Follows the authors' code (``aenglebert/Transformer_Input_Sampling``, ``tis/tis.py``, class
``TIS``: ``get_encoder_activations``, ``generate_raw_masks``, ``generate_binary_masks``,
``generate_scores``, ``generate_saliency``; defaults from ``config/method/tis.yaml``):

1. every block's output, concatenated over blocks: each of the ``L·D`` activation features is a
   point in R^P (its values over the P patch tokens);
2. k-means (``fast_pytorch_kmeans.KMeans``: random initial points drawn with replacement,
   Lloyd steps until the squared centroid shift is at most ``tol``, an empty cluster's centroid
   becomes 0) into ``n_masks`` clusters; each centroid's top ``int(tokens_ratio·P)`` patches form
   a binary mask;
3. for each mask, one forward pass of the image with only the masked-in patch tokens (and the
   special tokens) kept after the position embedding; score = softmax probability of the target;
4. ``map = sum_m score_m mask_m / sum_m mask_m``.

Differences: the images of a batch are processed together (every image its own k-means and
masks); the authors' final min-max normalisation is left out (maps here are raw, and it
does not change the ranking); a patch no mask covers scores 0 (the authors divide by 0).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F

from ..models.base import ModelAdapter
from ._blocks import keep_tokens, record_block_outputs
from ._common import check_positive, check_range, recorded, recording
from .base import Method, Trace, register

_OUTPUTS = "tis.block_outputs"


def kmeans(points: torch.Tensor, clusters: int, seed: int, max_iter: int = 100, tol: float = 1e-4) -> torch.Tensor:
    """Batched k-means, per item as ``fast_pytorch_kmeans.KMeans(mode="euclidean", init_method="random")``.

    Args:
        points: (B, n, P): n points in R^P per item.
        clusters: k.
        seed: the initial centroids are the points ``randint(0, n, (k,))`` of a generator with this seed.

    Returns:
        Centroids (B, k, P). An item stops moving once its squared centroid shift is ``<= tol``.
    """
    batch, n, _ = points.shape
    start = torch.randint(0, n, (clusters,), generator=torch.Generator().manual_seed(seed)).to(points.device)
    centroids = points[:, start]
    done = torch.zeros(batch, dtype=torch.bool, device=points.device)
    squares = (points**2).sum(dim=-1)[:, :, None]
    for _ in range(max_iter):
        sim = 2 * torch.bmm(points, centroids.transpose(1, 2)) - squares - (centroids**2).sum(dim=-1)[:, None, :]
        member = F.one_hot(sim.argmax(dim=-1), clusters).to(points.dtype)  # (B, n, k)
        moved = torch.nan_to_num(torch.bmm(member.transpose(1, 2), points) / member.sum(dim=1)[:, :, None])
        shift = (moved - centroids).pow(2).sum(dim=(1, 2))
        centroids = torch.where(done[:, None, None], centroids, moved)
        done = done | (shift <= tol)
        if bool(done.all()):
            break
    return centroids


@register
class TIS(Method):
    """Transformer Input Sampling: scores of forward passes that keep only a subset of the
    patch tokens, the subsets from k-means clusters of the encoder's activations.

    Args:
        n_masks: clusters, hence masks and forward passes per image (default 1024).
        tokens_ratio: share of the patch tokens each mask keeps (default 0.5).
        batch_size: masked sequences per forward pass (default 128).
        max_iter, tol: k-means stopping rule (defaults 100 and 1e-4, fast_pytorch_kmeans').
        seed: seeds the k-means initialisation (same seed, same map).

    Cost per image: the shared forward + ``n_masks`` forwards of ``tokens_ratio`` of the tokens,
    plus the k-means.
    """

    name = "tis"
    needs_gradients = False
    signed = False
    description = "Transformer Input Sampling (Englebert et al. 2023): scores of token subsets from k-means masks"

    def __init__(self, *, n_masks: int = 1024, tokens_ratio: float = 0.5, batch_size: int = 128,
                 max_iter: int = 100, tol: float = 1e-4, seed: int = 0):
        check_positive(self.name, n_masks=n_masks, batch_size=batch_size, max_iter=max_iter)
        check_range(self.name, "tokens_ratio", tokens_ratio, 0, 1, open_low=True)
        check_range(self.name, "tol", tol, 0, 1)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            from ..errors import AttngradError

            raise AttngradError(f"{self.name}: seed must be a non-negative integer, not {seed!r}")
        self.n_masks, self.tokens_ratio, self.batch_size = n_masks, tokens_ratio, batch_size
        self.max_iter, self.tol, self.seed = max_iter, tol, seed

    def capture(self, adapter: ModelAdapter, extras: dict[str, Any]) -> AbstractContextManager[None]:
        return recording(adapter, extras, _OUTPUTS, record_block_outputs)

    def masks(self, trace: Trace) -> torch.Tensor:
        """Kept patch indices (B, n_masks, k), best-scoring centroid entries first."""
        prefix = trace.num_prefix_tokens
        outputs = recorded(trace, _OUTPUTS, record_block_outputs)
        points = torch.cat(outputs, dim=-1)[:, prefix:].transpose(1, 2).float()  # (B, L*D, P)
        centroids = kmeans(points, self.n_masks, self.seed, self.max_iter, self.tol)
        keep = max(1, int(self.tokens_ratio * points.shape[-1]))
        # torch.topk as the authors' generate_binary_masks: an empty cluster's all-zero centroid is a
        # tie, which topk breaks its own way (on CPU: the last patches), not by the lowest index
        return centroids.topk(keep, dim=-1).indices

    @torch.no_grad()
    def __call__(self, trace: Trace) -> torch.Tensor:
        kept = self.masks(trace)  # (B, M, k)
        batch, masks, keep = kept.shape
        prefix = trace.num_prefix_tokens
        device = trace.pixel_values.device
        image_of = torch.arange(batch, device=device).repeat_interleave(masks)
        tokens = torch.cat([torch.arange(prefix, device=device).expand(batch * masks, prefix),
                            kept.reshape(-1, keep) + prefix], dim=1)
        scores = []
        for start in range(0, batch * masks, self.batch_size):
            rows = image_of[start : start + self.batch_size]
            used, local = rows.unique(return_inverse=True)
            with keep_tokens(trace.adapter.model, tokens[start : start + self.batch_size], local):
                logits = trace.adapter.forward(trace.pixel_values[used]).logits
            scores.append(logits.float().softmax(dim=-1).gather(1, trace.targets.to(device)[rows, None])[:, 0])
        score = torch.cat(scores).view(batch, masks)
        patches = trace.grid[0] * trace.grid[1]
        binary = torch.zeros(batch, masks, patches, device=device).scatter_(2, kept, 1.0)
        coverage = binary.sum(dim=1)
        total = torch.einsum("bm,bmp->bp", score, binary)
        saliency = torch.where(coverage > 0, total / coverage.clamp(min=1), torch.zeros_like(total))
        return saliency.view(batch, *trace.grid)
