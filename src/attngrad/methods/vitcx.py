"""ViT-CX, causal explanation of Vision Transformers (Xie et al., IJCAI 2023).

Follows the authors' code (``vaynexie/CausalX-ViT``: ``ViT_CX/ViT_CX.py``, function ``ViT_CX``,
and ``ViT_CX/causal_score.py``, class ``causal_score``; defaults from their ``README.md``:
``target_layer = model.blocks[-1].norm1``, ``distance_threshold = 0.1``, ``gpu_batch = 50``):

1. the last block's first-LayerNorm output at the patch tokens: ``D`` feature maps on the patch
   grid, each upsampled bilinearly to the input size and min-max normalised;
2. agglomerative clustering of the maps (complete linkage, cosine distance, merge below
   ``distance_threshold``); each cluster's summed maps, min-max normalised, form a mask ``M_i``;
3. for each mask, the softmax probability of the target for ``x·M_i + n_i·(1-M_i)`` and for
   ``x + n_i·(1-M_i)``, with Gaussian noise ``n_i`` of standard deviation ``noise``:
   ``s_i = p(masked) - p(noised) + p(x)``;
4. ``map = (1/N) sum_i s_i M_i / sum_j M_j`` (pixelwise), averaged here over each patch so the
   map lies on the patch grid like every other method's.

Differences: the images of a batch share the masked forward passes; clusters are numbered by
their lowest feature index (the noise of cluster ``i`` is the ``i``-th draw of a generator
seeded ``seed``), so a seed fixes the map; a constant feature map normalises to 0, and a pixel
no mask covers scores 0 (the authors get NaN for both).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AttngradError
from ..models.base import ModelAdapter
from ._blocks import record_last_norm
from ._common import check_positive, check_range, image_adapter, recorded, recording
from .base import Method, Trace, register

_FEATURES = "vitcx.features"


def _minmax(rows: torch.Tensor) -> torch.Tensor:
    low = rows.amin(dim=-1, keepdim=True)
    high = rows.amax(dim=-1, keepdim=True)
    return torch.nan_to_num((rows - low) / (high - low))


def cluster_features(maps: torch.Tensor, threshold: float) -> np.ndarray:
    """Cluster label per row of ``maps`` (D, HW): complete linkage on ``1 - cosine similarity``,
    merging below ``threshold``; clusters numbered in order of their lowest row index."""
    try:
        from sklearn.cluster import AgglomerativeClustering
    except ImportError:
        raise AttngradError("vitcx needs scikit-learn; pip install 'scikit-learn>=1.2'") from None

    unit = maps / maps.norm(dim=1, keepdim=True)
    distance = torch.nan_to_num(1 - unit @ unit.T, nan=1.0).clamp(min=0).double().cpu().numpy()
    labels = AgglomerativeClustering(
        n_clusters=None, distance_threshold=threshold, metric="precomputed", linkage="complete"
    ).fit(distance).labels_
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # old label -> rank of its first member
    return order[labels]


@register
class ViTCX(Method):
    """ViT-CX: causal impact of masks made from clusters of the last block's feature maps.

    Args:
        distance_threshold: clustering threshold on the cosine distance (default 0.1).
        noise: standard deviation of the Gaussian noise outside each mask (default 0.1).
        batch_size: masked images per forward pass (default 50).
        seed: seeds the noise (same seed, same map).

    Cost per image: the shared forward + 2 forwards per cluster (typically tens to a few hundred).
    """

    name = "vitcx"
    needs_gradients = False
    signed = False
    description = "ViT-CX (Xie et al. 2023): causal impact of masks from clustered ViT feature maps"

    def __init__(self, *, distance_threshold: float = 0.1, noise: float = 0.1, batch_size: int = 50, seed: int = 0):
        check_positive(self.name, batch_size=batch_size)
        check_range(self.name, "distance_threshold", distance_threshold, 0, 2, open_low=True)
        check_range(self.name, "noise", noise, 0, 1)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise AttngradError(f"{self.name}: seed must be a non-negative integer, not {seed!r}")
        self.distance_threshold, self.noise, self.batch_size, self.seed = distance_threshold, noise, batch_size, seed

    def capture(self, adapter: ModelAdapter, extras: dict[str, Any]) -> AbstractContextManager[None]:
        return recording(adapter, extras, _FEATURES, record_last_norm)

    def masks(self, trace: Trace) -> list[torch.Tensor]:
        """Per image, the masks (n_i, H, W) in [0, 1]."""
        (features,) = recorded(trace, _FEATURES, record_last_norm)[:1]
        gh, gw = trace.grid
        height, width = trace.pixel_values.shape[-2:]
        grid = features[:, trace.num_prefix_tokens :].float().transpose(1, 2).reshape(-1, features.shape[-1], gh, gw)
        maps = _minmax(F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False).flatten(2))
        result = []
        for image_maps in maps:
            labels = torch.as_tensor(cluster_features(image_maps, self.distance_threshold), device=maps.device)
            summed = torch.zeros(int(labels.max()) + 1, maps.shape[-1], device=maps.device).index_add_(0, labels, image_maps)
            result.append(_minmax(summed).view(-1, height, width))
        return result

    @torch.no_grad()
    def __call__(self, trace: Trace) -> torch.Tensor:
        patch = image_adapter(trace, self.name).patch_size
        masks = self.masks(trace)
        x = trace.pixel_values
        device, targets = x.device, trace.targets.to(x.device)
        pairs = [(b, i) for b, m in enumerate(masks) for i in range(len(m))]
        generators = [torch.Generator().manual_seed(self.seed) for _ in masks]
        chunks = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            images = torch.tensor([b for b, _ in chunk], device=device)
            mask = torch.stack([masks[b][i] for b, i in chunk])[:, None].to(x.dtype)
            noise = torch.stack([torch.randn(x.shape[1:], generator=generators[b]) for b, _ in chunk]).to(device, x.dtype)
            noise = self.noise * noise * (1 - mask)
            inputs = torch.cat([x[images] * mask + noise, x[images] + noise])
            p = trace.adapter.forward(inputs).logits.float().softmax(dim=-1)
            p = p.gather(1, targets[images].repeat(2)[:, None])[:, 0]
            chunks.append(p.view(2, -1))
        probs = torch.cat(chunks, dim=1)
        clean = trace.logits.float().softmax(dim=-1).gather(1, targets[:, None])[:, 0]
        maps, offset = [], 0
        for b, mask in enumerate(masks):
            n = len(mask)
            score = probs[0, offset : offset + n] - probs[1, offset : offset + n] + clean[b]
            offset += n
            cover = mask.sum(dim=0)
            share = torch.where(cover > 0, mask / cover.clamp(min=torch.finfo(cover.dtype).tiny), 0.0)
            pixel = torch.einsum("n,nhw->hw", score, share) / n
            maps.append(F.avg_pool2d(pixel[None, None], patch)[0, 0])
        return torch.stack(maps)
