"""A fuzzer for every command: the contract holds whatever the arguments.

Each command has a cheap valid invocation on tiny random models saved as folders (a ViT, a
Llama, a BART, a LLaVA); hypothesis replaces one or two of its options (or a positional
argument) with a value drawn from valid and hostile ones: any code points, bytes that are not
UTF-8 (as the shell passes them: lone surrogates), huge and negative numbers, NaN and
infinities, long names, empty and whitespace values. Every run must end one of two ways:

- exit 0, and every ``.npy`` it wrote is finite;
- exit 2 with exactly one stderr line ``attngrad: error: ...``, no traceback, and nothing left
  in the output folder.

Each example has a time limit (a value that makes a command run away, such as 10**12 steps,
must be refused). Profiles: ``ci`` (default: a few examples per command, derandomised, about a
minute) and ``long`` (``ATTNGRAD_FUZZ=long pytest tests/test_fuzz_cli.py``: many random examples).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attngrad.cli import main

from .conftest import tiny_vit_config

settings.register_profile("ci", max_examples=4, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("long", max_examples=int(os.environ.get("ATTNGRAD_FUZZ_EXAMPLES", "200")), deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("ATTNGRAD_FUZZ", "ci"))

SECONDS = int(os.environ.get("ATTNGRAD_FUZZ_SECONDS", "60"))  # per example

#: hostile values of every kind, and a few valid ones so that runs also get past parsing
HOSTILE = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "\t\n", "0", "-1", "-0", "1e400", "nan", "inf", "-inf", "1e-320", str(10**12),
                     str(-(10**12)), "x" * 300, "caf\udce9 \udcff", "../../etc/passwd", "a,b,,", ",", "top0",
                     "top999999", "\u202e\u0000", "😀" * 4, "el1", "all", "1", "2", "0.5"]),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random models saved as folders: {vit, llama, bart, llava}."""
    from transformers import ViTForImageClassification

    from .lm.conftest import word_tokenizer as lm_tokenizer
    from .seq2seq.conftest import make_model
    from .vlm.conftest import TEMPLATE, tiny_llava
    from .vlm.conftest import word_tokenizer as vlm_tokenizer

    root = tmp_path_factory.mktemp("fuzz-models")
    torch.manual_seed(0)
    ViTForImageClassification(tiny_vit_config()).save_pretrained(root / "vit")
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                 pad_token_id=0, eos_token_id=2, attn_implementation="eager")).save_pretrained(root / "llama")
    lm_tokenizer().save_pretrained(root / "llama")
    bart, tok = make_model("bart")
    bart.float().save_pretrained(root / "bart")
    tok.save_pretrained(root / "bart")
    llava = tiny_llava("vit")
    llava.config.attngrad_template = TEMPLATE
    llava.save_pretrained(root / "llava")
    vlm_tokenizer().save_pretrained(root / "llava")
    (root / "llava" / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 16, "width": 16},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3, "resample": 2}))
    data = root / "data"
    data.mkdir()
    from attngrad.io import find_sample

    for name in ("zebra", "tusker"):
        src = find_sample(name)
        (data / src.name).write_bytes(src.read_bytes())
    return {k: str(root / k) for k in ("vit", "llama", "bart", "llava", "data")}


#: command -> (its cheap valid argument list with {placeholders}, the options the fuzzer may replace)
COMMANDS = {
    "explain": (["explain", "el1", "--model", "{vit}", "-m", "complete,gae", "--out", "{out}"],
                ["-m", "--target", "--contrast", "--loss", "--start-layer", "--token", "--batch-size", "--layout", "--device"]),
    "predict": (["predict", "el1", "--model", "{vit}"], ["-k", "--device"]),
    "classes": (["classes", "--model", "{vit}"], ["--search"]),
    "compare": (["compare", "el1", "--model", "{vit}", "-m", "complete,rollout", "--out", "{out}"],
                ["--targets", "--methods", "--loss"]),
    "detail": (["detail", "el1", "--model", "{vit}", "--out", "{out}"], ["-k", "--target", "--contrast", "--loss"]),
    "transfer": (["transfer", "el1", "--model", "{vit}", "--steps", "2", "--out", "{out}"],
                 ["--target", "--opposing", "--steps", "--lr", "--optimizer"]),
    "rewrite": (["rewrite", "el1", "--model", "{vit}", "--steps", "2", "--out", "{out}"],
                ["--to", "--from", "--eps", "--steps", "--probability", "--loss", "--limit", "--seed", "--batch-size"]),
    "explain-lm": (["explain-lm", "the capital of france is", "--model", "{llama}", "--out", "{out}", "--no-color"],
                   ["--method", "--target", "--contrast", "--loss", "--generate", "--start-layer", "--top", "--batch-size"]),
    "explain-seq2seq": (["explain-seq2seq", "the cat sat", "--model", "{bart}", "--out", "{out}", "--no-color"],
                        ["--target", "--position", "--method", "--loss", "--contrast"]),
    "explain-vlm": (["explain-vlm", "el1", "what animal", "--model", "{llava}", "--out", "{out}"],
                    ["--method", "--reading", "--target", "--contrast", "--loss", "--generate"]),
    "evaluate perturbation": (["evaluate", "perturbation", "--data", "{data}", "--model", "{vit}", "--methods",
                               "complete,random", "--out", "{out}"],
                              ["--methods", "--explain", "--limit", "--every", "--batch-size", "--eval-batch-size",
                               "--guide", "--guide-region"]),
    "evaluate sanity": (["evaluate", "sanity", "--data", "{data}", "--model", "{vit}", "--methods", "complete",
                         "--out", "{out}"], ["--methods", "--explain", "--limit", "--batch-size", "--seed"]),
    "evaluate lm-deletion": (["evaluate", "lm-deletion", "--model", "{llama}", "--limit", "2", "--methods", "random",
                              "--out", "{out}"],
                             ["--methods", "--loss", "--contrast", "--reviews", "--limit", "--batch-size",
                              "--eval-batch-size"]),
    "evaluate lm-evidence": (["evaluate", "lm-evidence", "--model", "{llama}", "--prompts", "2", "--candidates", "4",
                              "--methods", "random,complete", "--out", "{out}"],
                             ["--methods", "--loss", "--contrast", "--prompts", "--candidates", "--seed", "--batch-size"]),
    "evaluate attribution-error": (["evaluate", "attribution-error", "--data", "{data}", "--model", "{vit}", "--limit", "1",
                                    "--steps", "1", "--rules", "trapezoid", "--out", "{out}"],
                                   ["--layers", "--baselines", "--rules", "--steps", "--limit", "--batch-size",
                                    "--items-per-pass"]),
    "evaluate grid": (["evaluate", "grid", "--data", "{data}", "--model", "{vit}", "--grids", "1", "--min-confidence",
                       "0.0001", "--methods", "complete,random", "--out", "{out}"],
                      ["--methods", "--n", "--grids", "--seed", "--min-confidence", "--limit", "--batch-size"]),
    "evaluate alignment": (["evaluate", "alignment", "--sentences", "2", "--bootstrap", "100", "--methods",
                            "complete,random", "--out", "{out}"],
                           ["--methods", "--loss", "--sentences", "--seed", "--bootstrap", "--batch-size"]),
    "evaluate lm-insertion": (["evaluate", "lm-insertion", "--model", "{llama}", "--limit", "2", "--methods", "random",
                               "--out", "{out}"], ["--methods", "--reviews", "--limit", "--batch-size", "--eval-batch-size"]),
}


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout(f"an example ran longer than {SECONDS} s")


def _replace(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with ``option``'s value set to ``value`` (appended when the option is not there yet)."""
    out = list(args)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


def _check_contract(result, out: Path, work: Path, args: list[str]) -> None:
    text = result.output
    assert "Traceback" not in text, f"{args}: traceback\n{text}"
    assert not isinstance(result.exception, _Timeout), f"{args}: {result.exception}"
    if result.exit_code == 0:
        for f in out.rglob("*.npy") if out.exists() else []:
            assert np.isfinite(np.load(f)).all(), f"{args}: {f.name} holds NaN or infinite values"
        return
    assert result.exit_code == 2, f"{args}: exit {result.exit_code}\n{text}\n{result.exception!r}"
    # what a terminal would show: warnings and progress bars (drawn before a later error) are not errors
    shown = [line.split("\r")[-1] for line in result.stderr.strip().splitlines()]
    lines = [line for line in shown if line and not line.startswith("attngrad: warning:") and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("attngrad: error: "), f"{args}: stderr {result.stderr!r}"
    assert not out.exists() or not any(out.iterdir()), f"{args}: left behind {list(out.rglob('*'))}"
    assert list(work.iterdir()) == [], f"{args}: left behind {list(work.iterdir())}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_keeps_the_contract(command, models, tmp_path_factory, monkeypatch):
    base, options = COMMANDS[command]

    @given(picks=st.lists(st.tuples(st.sampled_from(options), HOSTILE), min_size=1, max_size=2))
    def run(picks):
        tmp = tmp_path_factory.mktemp("fuzz")
        work, out = tmp / "work", tmp / "out"
        work.mkdir()
        args = [a.format(**models, out=str(out)) for a in base]
        for option, value in picks:
            args = _replace(args, option, value)
        monkeypatch.chdir(work)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(SECONDS)
        try:
            result = CliRunner().invoke(main, args)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        _check_contract(result, out, work, args)

    run()
