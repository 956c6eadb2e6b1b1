"""Contrastive losses against several names at once: "this name rather than those".

``against_the_others`` explains row k's token *rather than* the mean of the other rows' tokens — on a 2 x 2 grid
explained cell by cell (row k: cell k's class name), the cell's name against the other three cells' names. The
evidence shared by every name ("an animal photo") cancels in the difference; on the LLaVA stand-in it lifts
``complete`` from 0.38 to 0.55 at picking the named cell (docs/results/vlm.md). ``mean_contrast`` is the
general form: per target token any number of contrast tokens. Both return a callable loss for
:meth:`attngrad.vlm.VLMExplainer.explain_methods` (``loss=``)::

    tokens = [vlm.adapter.tokenizer(" " + n, add_special_tokens=False)["input_ids"][0] for n in names]
    out = vlm.explain_methods([grid] * 4, "What is in this photo?", ["complete"], target=tokens,
                              loss=against_the_others(tokens))
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..errors import AttngradError


def mean_contrast(contrasts: Mapping[int, Sequence[int]]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss of a row whose target is ``t``: ``logit[t] - mean_j logit[contrasts[t][j]]``.

    ``contrasts`` maps each target token id to its contrast token ids (the same count for every target); the rows
    are matched by their target, so any batching and order of the rows gives the same maps.
    """
    table = {int(t): [int(c) for c in cs] for t, cs in contrasts.items()}
    counts = {len(cs) for cs in table.values()}
    if not table or len(counts) != 1 or 0 in counts:
        raise AttngradError("give every target the same number (at least one) of contrast tokens")
    if any(t in cs for t, cs in table.items()):
        raise AttngradError("a target's contrasts include the target itself; leave it out")

    def diff_from_the_mean(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        missing = sorted({int(t) for t in targets} - set(table))
        if missing:
            raise AttngradError(f"no contrast tokens for target id(s) {missing}; give them in the contrasts")
        index = torch.tensor([table[int(t)] for t in targets], dtype=torch.long, device=logits.device)
        if int(index.max()) >= logits.shape[1] or int(index.min()) < 0:
            raise AttngradError(f"a contrast token id is out of range; this model has ids 0..{logits.shape[1] - 1}")
        own = logits.gather(1, targets[:, None])[:, 0]
        return own - logits.gather(1, index).mean(-1)

    return diff_from_the_mean


def against_the_others(tokens: Sequence[int]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss of the row explaining ``tokens[k]``: its logit minus the mean logit of the other tokens (``target=tokens``)."""
    ids = [int(t) for t in tokens]
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise AttngradError("against_the_others needs at least two different tokens, one per row")
    return mean_contrast({t: [u for u in ids if u != t] for t in ids})
