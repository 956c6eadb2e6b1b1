"""The language-model insertion test (attngrad.lm.insertion, `evaluate lm-insertion`) on a tiny random
Llama: curves against a per-step loop written here (one unpadded sequence at a time), the neutral
token, the end points, resumption and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.lm import LMExplainer
from attngrad.lm.deletion import DeletionSettings
from attngrad.lm.insertion import evaluate_batch, neutral_token, run_insertion
from attngrad.lm.prompts import Prompt

PROMPTS = [
    Prompt("the capital of france is", " paris", "capital"),
    Prompt("i liked this film it was very", " good", "review"),
    Prompt("a cat sat on the mat and a dog ran to the", " park", "other"),
]


@pytest.fixture(scope="module")
def lm(tiny_llama, tokenizer):
    return LMExplainer(tiny_llama, tokenizer)


def _loop_curve(model, ids, scores, target, *, most_first, skip_first, neutral):
    """Per step: sort by hand, show the first k positions (and the first token with skip_first), the rest neutral."""
    positions = list(range(1 if skip_first else 0, len(ids)))
    positions.sort(key=lambda j: (-scores[j], j))
    if not most_first:
        positions = positions[::-1]
    curve = []
    for step in range(11):
        k = int(step * len(positions) / 10 + 0.5)
        shown = set(positions[:k]) | ({0} if skip_first else set())
        seq = [t if j in shown else neutral for j, t in enumerate(ids)]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
        curve.append(float(logits.log_softmax(-1)[target]))
    return curve


@pytest.mark.parametrize("skip_first", [False, True])
def test_curves_equal_a_per_step_loop(lm, tiny_llama, tokenizer, skip_first):
    assert neutral_token(lm) == tokenizer.pad_token_id  # the word tokenizer has no space token
    names = ["grad_x_input", "complete"]
    settings = DeletionSettings(names, skip_first=skip_first)
    settings.check()
    data = evaluate_batch(lm, PROMPTS, settings, eval_batch_size=5)  # several padded chunks
    targets = [tokenizer(p.target, add_special_tokens=False)["input_ids"][0] for p in PROMPTS]
    explained = lm.explain_methods([p.text for p in PROMPTS], names, target=targets)
    for name in names:
        for i, p in enumerate(PROMPTS):
            ids = tokenizer(p.text)["input_ids"]
            scores = explained[name].scores(i).tolist()
            for direction, most in (("most", True), ("least", False)):
                expected = _loop_curve(tiny_llama, ids, scores, targets[i], most_first=most, skip_first=skip_first,
                                       neutral=tokenizer.pad_token_id)
                assert data["curves"][name][direction][i] == pytest.approx(expected, abs=1e-4), (name, direction, i)
            # the last step is the prompt itself, the first all neutral: both directions agree there
            m, least = data["curves"][name]["most"][i], data["curves"][name]["least"][i]
            assert m[0] == pytest.approx(least[0]) and m[-1] == pytest.approx(least[-1])


def test_run_resume_and_cli(lm, tiny_llama, tokenizer, tmp_path):
    settings = DeletionSettings(["grad_x_input", "gae"], batch_size=2)
    full = run_insertion(lm, PROMPTS, tmp_path / "a", settings)
    assert full["methods"]["gae"]["gap"] == pytest.approx(full["methods"]["gae"]["auc_most"]
                                                         - full["methods"]["gae"]["auc_least"])
    (tmp_path / "a" / "shards" / "batch_00001.json").unlink()  # as if killed before the last batch
    again = run_insertion(lm, PROMPTS, tmp_path / "a", DeletionSettings(["grad_x_input", "gae"], batch_size=2),
                          resume=True)
    assert json.dumps(again) == json.dumps(full)
    folder = tmp_path / "tiny"
    tiny_llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    r = CliRunner().invoke(main, ["evaluate", "lm-insertion", "--model", str(folder), "--out", str(tmp_path / "c"),
                                  "--reviews", "0", "--limit", "2", "--methods", "grad_x_input"])
    assert r.exit_code == 0, r.output
    assert "Insertion test, 2 prompts" in (tmp_path / "c" / "results.md").read_text()
