"""The ``random`` baseline: a random score per patch, the floor every method must beat.

The scores of an image are drawn from a generator seeded with a checksum of that
image's own pixels, so an image gets the same map whatever batch it is in, on any
device, in any process (needed for resumable and distributed evaluation to agree).
"""

from __future__ import annotations

import zlib

import torch

from .base import Method, Trace, register


def content_seed(image: torch.Tensor) -> int:
    """A 32-bit seed from an image tensor's bytes (CRC-32 of its float32 values on the CPU)."""
    return zlib.crc32(image.detach().float().cpu().contiguous().numpy().tobytes())


@register
class RandomBaseline(Method):
    """Uniform random scores in [0, 1) over all tokens, seeded per image by :func:`content_seed`."""

    name = "random"
    description = "uniform random scores, seeded by each image's pixels: the floor to beat"
    needs_gradients = False

    def token_scores(self, trace: Trace) -> torch.Tensor:
        tokens = trace.attentions[-1].shape[-1]
        rows = [
            torch.rand(tokens, generator=torch.Generator().manual_seed(content_seed(image)))
            for image in trace.pixel_values
        ]
        return torch.stack(rows).to(trace.attentions[-1].device)
