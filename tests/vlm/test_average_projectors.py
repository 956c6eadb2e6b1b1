"""scripts/average_projectors.py: the weighted average of two projectors, element by element."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import average_projectors  # noqa: E402


def test_the_average_is_one_minus_w_times_a_plus_w_times_b_in_float16(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    a = {"linear_1.weight": torch.randn(6, 4, generator=g).half(), "linear_1.bias": torch.randn(6, generator=g).half()}
    b = {k: torch.randn(v.shape, generator=g).half() for k, v in a.items()}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    monkeypatch.setattr(sys, "argv", ["x", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                                      "--weight", "0.7", "--out", str(tmp_path / "out.safetensors")])
    average_projectors.main()
    out = load_file(str(tmp_path / "out.safetensors"))
    assert out.keys() == a.keys()
    for k in a:
        assert out[k].dtype == torch.float16
        want = [0.3 * float(x) + 0.7 * float(y) for x, y in zip(a[k].flatten(), b[k].flatten())]
        torch.testing.assert_close(out[k].float().flatten(), torch.tensor(want), atol=2e-3, rtol=1e-3)


def test_projectors_of_different_tensors_are_refused():
    a = {"w": torch.zeros(2, 2)}
    with pytest.raises(SystemExit, match="different tensors"):
        average_projectors.average(a, {"w": torch.zeros(2, 3)}, 0.5)
    with pytest.raises(SystemExit, match="different tensors"):
        average_projectors.average(a, {"v": torch.zeros(2, 2)}, 0.5)
