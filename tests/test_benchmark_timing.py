"""The helpers the benchmark scripts share (benchmarks/_timing.py): the matrix-product count and the JSON writer."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def timing():
    spec = importlib.util.spec_from_file_location("_timing", REPO / "benchmarks" / "_timing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matmul_flops_counts_two_per_multiply_add_and_sees_backward(timing):
    x, w = torch.randn(5, 7), torch.randn(3, 7)
    assert timing.matmul_flops(lambda: F.linear(x, w)) == 2 * 5 * 7 * 3
    assert timing.matmul_flops(lambda: x.relu() + 1) == 0  # elementwise work is not counted
    leaf = x.clone().requires_grad_(True)

    def forward_backward():  # torch.autograd.grad inside: the backward's product to the input counts too
        torch.autograd.grad(F.linear(leaf, w).sum(), leaf)

    assert timing.matmul_flops(forward_backward) == 2 * (2 * 5 * 7 * 3)


def test_write_json_makes_folders_and_writes_strict_json(timing, tmp_path):
    path = tmp_path / "a" / "b.json"
    timing.write_json(path, {"x": math.nan, "y": [1.5, math.inf, (2, -math.inf)], "z": "s"})
    text = path.read_text()
    assert json.loads(text) == {"x": None, "y": [1.5, None, [2, None]], "z": "s"} and "NaN" not in text
