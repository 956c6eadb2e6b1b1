"""TAM, Transition Attention Maps (Yuan et al., "Explaining Information Flow Inside Vision
Transformers Using Markov Chain", NeurIPS XAI4Debugging workshop 2021).

Follows the authors' code (``XianrenYty/Transition_Attention_Maps``,
``baselines/ViT/ViT_explanation_generator.py``, ``Baselines.generate_transition_attention_maps``),
as ``rivals.md`` section 1 describes it:

    s = Abar(L-1)[0, :] · (I + Abar(L-2)) · ... · (I + Abar(start_layer))
    map = s ⊙ W[0, :]          (patch columns)

with ``Abar(l)`` the head mean of layer ``l``'s attention at the unscaled input and ``W`` the
integrated gradient of the last layer (:mod:`._integrated`).
"""

from __future__ import annotations

import torch

from ..errors import AttngradError
from ._integrated import IntegratedMethod
from .base import Trace, register


@register
class TAM(IntegratedMethod):
    """Transition attention map: a Markov-chain rollout of the head-mean attention from the last
    layer down to ``start_layer``, times the last layer's integrated gradient (CLS row).

    Args:
        start_layer: lowest layer of the chain, counted from 0 (default 4, as in the authors'
            perturbation, segmentation and energy-pointing-game scripts; their ``del_ins.py``
            uses 0).
        steps: integration steps K (default 20); ``alpha = 0, 1/(K-1), ..., 1``.
        batch_size: scaled copies per forward pass (default 64).

    Cost per image: 1 forward + 1 backward (shared trace) + ``steps`` forwards with a backward
    through the last block only.
    """

    name = "tam"
    needs_gradients = False
    signed = False
    description = "Transition attention maps (Yuan et al. 2021): attention Markov chain x integrated gradient"

    default_start = 4

    def token_scores(self, trace: Trace) -> torch.Tensor:
        start = self.start(trace)
        layers = len(trace.attentions)
        token = trace.token
        if not isinstance(token, int):
            raise AttngradError(f"{self.name} reads one token's row (an image model's CLS); this model pools every token")
        means = [a.mean(dim=1) for a in trace.attentions]
        row = means[-1][:, token : token + 1]  # (B, 1, N)
        eye = torch.eye(row.shape[-1], dtype=row.dtype, device=row.device)
        for layer in range(layers - 2, start - 1, -1):
            row = torch.bmm(row, means[layer] + eye)
        weight = self.integrated_weight(trace)
        return row[:, 0] * weight[:, token]
