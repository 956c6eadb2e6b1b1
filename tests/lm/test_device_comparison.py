"""The comparison of the ``test_on_cuda`` files can fail: it runs on the CPU (never skipped) and checks that
:func:`tests._devices.assert_same` rejects a map of another target, a slightly changed model and a
float64 map off by 1e-5, and accepts a map that differs by float32 rounding only."""

from __future__ import annotations

import copy

import pytest
import torch

from attngrad.lm import LMExplainer

from .._devices import assert_same

PROMPTS = ["the capital of france is", "a cat sat on the", "dog ran"]


def test_another_target_fails(tiny_llama, tokenizer):
    ex = LMExplainer(tiny_llama, tokenizer)
    top1 = ex.explain(PROMPTS, target="top1").maps
    top2 = ex.explain(PROMPTS, target="top2").maps
    assert_same(top1, top1.clone(), "same")
    with pytest.raises(AssertionError):
        assert_same(top1, top2, "another target")


def test_a_changed_model_fails(tiny_gpt2, tokenizer):
    changed = copy.deepcopy(tiny_gpt2)
    with torch.no_grad():
        changed.transformer.h[1].attn.c_attn.weight.mul_(1.05)
    a = LMExplainer(tiny_gpt2, tokenizer).explain(PROMPTS)
    b = LMExplainer(changed, tokenizer).explain(PROMPTS, target=a.targets)  # the same tokens explained
    with pytest.raises(AssertionError):
        assert_same(a.maps, b.maps, "changed model")


def test_rounding_passes_and_float64_is_tight():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 10, generator=gen)
    assert_same(maps, maps * (1 + 1e-7 * torch.randn(3, 10, generator=gen)), "float32 rounding")
    with pytest.raises(AssertionError):
        assert_same(maps, maps * 1.01, "float32 scaled by 1 %")
    double = maps.double()
    assert_same(double, double * (1 + 1e-9), "float64 rounding")
    with pytest.raises(AssertionError):
        assert_same(double, double * (1 + 1e-5), "float64 off by 1e-5")
    zero_row = maps.clone()
    zero_row[1] = 0
    with pytest.raises(AssertionError):
        assert_same(zero_row, maps, "a zero row that is not zero there")
    with pytest.raises(AssertionError):
        assert_same(maps, torch.full_like(maps, torch.nan), "NaN")
