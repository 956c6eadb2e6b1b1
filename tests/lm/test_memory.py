"""The memory estimate and the refusal before a pass that cannot fit (the CLI had no prompt-length guard)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.lm import memory


def test_the_estimate_is_layers_heads_tokens_squared(tiny_llama):
    cfg = tiny_llama.config
    weights = sum(p.numel() * 4 for p in tiny_llama.parameters())
    want = (cfg.num_hidden_layers + 3) * 2 * cfg.num_attention_heads * 100 * 100 * 4 + weights
    assert memory.needed_bytes(tiny_llama, 2, 100) == want
    # SmolLM2-135M at 4,000 tokens (the run that ran out of memory under 18 GB): about 17 GB of maps
    assert 16e9 < (30 + 3) * 9 * 4000**2 * 4 < 20e9


def test_a_pass_that_cannot_fit_is_refused_before_any_work(tiny_lm, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    calls = []
    monkeypatch.setattr(torch.nn.Module, "__call__", lambda *a, **k: calls.append(1))
    with pytest.raises(AttngradError, match="needs about .* GB .* is free"):
        tiny_lm.explain("the capital of france is")
    assert calls == []


def test_cli_refusal_is_one_line(tmp_path, monkeypatch, tiny_llama, tokenizer):
    folder = tmp_path / "llama"
    tiny_llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    monkeypatch.setenv("ATTNGRAD_MEMORY_LIMIT_GB", "0.000001")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["explain-lm", "the cat sat on the mat", "--model", str(folder), "--out", str(out)])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error: explaining 1 prompt(s)"), lines
    assert not out.exists()
