"""The device the ``test_on_cuda`` files compare with the CPU, and their comparisons.

``ATTNGRAD_TEST_DEVICE`` names it (default ``cuda``); the tests skip when it is not present, so CI (no
GPU) skips them. ``ATTNGRAD_TEST_DEVICE=cpu`` runs every one CPU against CPU, which checks that the
tests themselves run. TF32 is switched off so that both devices compute in full float32.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

DEVICE = os.environ.get("ATTNGRAD_TEST_DEVICE", "cuda")


def _available(name: str) -> bool:
    """Whether the device ``name`` is present (the library's own check, :func:`attngrad.models.check_device`)."""
    from attngrad.errors import AttngradError
    from attngrad.models import check_device

    try:
        check_device(name)
    except AttngradError:
        return False
    return True


#: Put on each module: skip unless :data:`DEVICE` is present.
on_device = pytest.mark.skipif(not _available(DEVICE), reason=f"{DEVICE} is not available (ATTNGRAD_TEST_DEVICE)")


# Full float32 matrix products on CUDA for the comparison (these test modules run only to compare devices).
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def moved(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` on :data:`DEVICE` (the CPU original stays where it is)."""
    return copy.deepcopy(model).to(DEVICE)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per item (first dimension), in float64 on the CPU."""
    a, b = a.detach().cpu().flatten(1).double(), b.detach().cpu().flatten(1).double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def assert_same(on_cpu: torch.Tensor, on_device: torch.Tensor, what: object, *, float64: bool | None = None) -> None:
    """``on_device`` is finite, on :data:`DEVICE` or the CPU, the shape of ``on_cpu`` and equal to it:
    ``allclose`` (rtol 1e-6, atol 5e-6 of the peak) for float64 maps, else per item cosine similarity >= 0.9999 and norms within 0.1 %."""
    assert on_device.device.type in (torch.device(DEVICE).type, "cpu"), (what, on_device.device)
    assert on_device.shape == on_cpu.shape, (what, tuple(on_device.shape), tuple(on_cpu.shape))
    assert torch.isfinite(on_device).all(), what
    got = on_device.detach().cpu()
    if float64 if float64 is not None else on_cpu.dtype == torch.float64:
        # the absolute part scales with the map: some models take their softmax in float32 even in float64
        # (CLIP's does), which leaves differences of about 4e-7 of the peak between CPU and GPU (measured on an H200)
        peak = float(on_cpu.double().abs().max()) if on_cpu.numel() else 0.0
        assert torch.allclose(got.double(), on_cpu.double(), rtol=1e-6, atol=max(5e-6 * peak, 1e-12)), (
            what, float((got.double() - on_cpu.double()).abs().max()), peak)
        return
    rows, got = on_cpu.reshape(on_cpu.shape[0], -1).double(), got.reshape(on_cpu.shape[0], -1).double()
    nonzero = rows.abs().amax(1) > 0
    similarity = cosine(rows, got)
    assert (similarity[nonzero] >= 0.9999).all(), (what, similarity.tolist())
    ratio = got.norm(dim=1)[nonzero] / rows.norm(dim=1)[nonzero]  # the cosine cannot see a scale
    assert ((ratio - 1).abs() <= 1e-3).all(), (what, "norms differ", ratio.tolist())
    scale = float(rows.abs().max()) if rows.numel() else 0.0
    assert (got[~nonzero].abs() <= 1e-6 * max(scale, 1e-30)).all(), (what, "rows that are zero on the CPU are not")
