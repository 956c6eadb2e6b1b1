"""The language-model deletion test (attngrad.lm.deletion, `evaluate lm-deletion`) on a tiny random Llama:
curves against a per-step loop written here (one unpadded sequence at a time), directions, the
attention-sink option, resumption and the CLI's one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.lm import LMExplainer
from attngrad.lm.deletion import FRACTIONS, DeletionSettings, auc, evaluate_batch, run_deletion
from attngrad.lm.prompts import Prompt, deletion_prompts

PROMPTS = [
    Prompt("the capital of france is", " paris", "capital"),
    Prompt("i liked this film it was very", " good", "review"),
    Prompt("a cat sat on the mat and a dog ran to the", " park", "other"),
]


@pytest.fixture(scope="module")
def lm(tiny_llama, tokenizer):
    return LMExplainer(tiny_llama, tokenizer)


def _loop_curve(model, ids, scores, target, *, most_first, skip_first, fill):
    """Per step: sort the scores by hand, drop the first k positions, run the model on the bare sequence."""
    positions = list(range(1 if skip_first else 0, len(ids)))
    positions.sort(key=lambda j: (-scores[j], j))
    if not most_first:
        positions = positions[::-1]
    curve = []
    for step in range(11):
        k = int(step * len(positions) / 10 + 0.5)
        kept = [t for j, t in enumerate(ids) if j not in positions[:k]] or [fill]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([kept])).logits[0, -1]
        curve.append(float(logits.log_softmax(-1)[target]))
    return curve


@pytest.mark.parametrize("skip_first", [False, True])
def test_curves_equal_a_per_step_loop(lm, tiny_llama, tokenizer, skip_first):
    settings = DeletionSettings(["grad_x_input", "complete"], skip_first=skip_first)
    settings.check()
    data = evaluate_batch(lm, PROMPTS, settings, eval_batch_size=5)  # several padded chunks
    explained = lm.explain_methods([p.text for p in PROMPTS], ["grad_x_input", "complete"],
                                   target=[tokenizer(p.target, add_special_tokens=False)["input_ids"][0] for p in PROMPTS])
    for name in ("grad_x_input", "complete"):
        for i, p in enumerate(PROMPTS):
            ids = tokenizer(p.text)["input_ids"]
            target = tokenizer(p.target, add_special_tokens=False)["input_ids"][0]
            scores = explained[name].scores(i).tolist()
            for direction, most in (("most", True), ("least", False)):
                expected = _loop_curve(tiny_llama, ids, scores, target, most_first=most, skip_first=skip_first,
                                       fill=tokenizer.eos_token_id)
                assert data["curves"][name][direction][i] == pytest.approx(expected, abs=1e-4), (name, direction, i)


def test_directions_and_end_points(lm, tiny_llama, tokenizer):
    settings = DeletionSettings(["grad_x_input"])
    settings.check()
    data = evaluate_batch(lm, PROMPTS[:1], settings)
    most, least = data["curves"]["grad_x_input"]["most"][0], data["curves"]["grad_x_input"]["least"][0]
    assert most[0] == pytest.approx(least[0]) and most[-1] == pytest.approx(least[-1])  # full prompt, nothing left
    assert most[1:-1] != pytest.approx(least[1:-1])  # the directions really remove different tokens
    # most-first removes the highest-scored token first
    ids = tokenizer(PROMPTS[0].text)["input_ids"]
    target = tokenizer(PROMPTS[0].target, add_special_tokens=False)["input_ids"][0]
    scores = lm.explain(PROMPTS[0].text, target=target, method="grad_x_input").scores(0)
    top = int(scores.argmax())
    kept = [t for j, t in enumerate(ids) if j != top]
    with torch.no_grad():
        lp = float(tiny_llama(input_ids=torch.tensor([kept])).logits[0, -1].log_softmax(-1)[target])
    assert most[2] == pytest.approx(lp, abs=1e-4)  # 20 % of 5 tokens = 1 token


def test_sink_share(lm, tokenizer):
    settings = DeletionSettings(["grad_x_input", "rollout"])
    settings.check()
    data = evaluate_batch(lm, PROMPTS, settings)
    target = [tokenizer(p.target, add_special_tokens=False)["input_ids"][0] for p in PROMPTS]
    res = lm.explain([p.text for p in PROMPTS], target=target, method="grad_x_input")
    for i in range(len(PROMPTS)):
        s = res.scores(i).abs()
        assert data["sink"]["grad_x_input"][i] == pytest.approx(float(s[0] / s.sum()), abs=1e-5)


def test_auc_trapezoid():
    assert auc([1.0] * 11) == pytest.approx(1.0)
    assert auc([f for f in FRACTIONS]) == pytest.approx(0.5)
    assert auc([-f for f in FRACTIONS]) == pytest.approx(-0.5)


def test_prompt_set_is_deterministic_and_large_enough():
    a, b = deletion_prompts(), deletion_prompts()
    assert a == b and len(a) >= 200
    kinds = {p.kind for p in a[:8]}
    assert "review" in kinds and "capital" in kinds
    reviews = [p for p in a if p.kind == "review"]
    assert {p.target for p in reviews} == {" positive", " negative"}
    assert all(p.text.startswith("Review: ") and p.text.endswith("\nSentiment:") for p in reviews)


def test_resume_gives_the_same_numbers(lm, tmp_path):
    settings = lambda: DeletionSettings(["grad_x_input", "random"], batch_size=2)  # noqa: E731
    whole = run_deletion(lm, PROMPTS, tmp_path / "a", settings())
    row = whole["methods"]["grad_x_input"]  # deletion: a faithful map keeps least-first high, so gap = least - most
    assert row["gap"] == pytest.approx(row["auc_least"] - row["auc_most"]) and row["gap"] != 0
    run_deletion(lm, PROMPTS[:2], tmp_path / "b", settings())
    assert json.loads((tmp_path / "b" / "results.json").read_text())["prompts"] == 2
    (tmp_path / "b" / "shards" / "batch_00000.json").unlink()  # an interrupted batch is recomputed
    resumed = run_deletion(lm, PROMPTS, tmp_path / "b", settings(), resume=True)
    assert resumed == whole
    with pytest.raises(Exception, match="already holds a run"):
        run_deletion(lm, PROMPTS, tmp_path / "b", settings())
    other = DeletionSettings(["grad_x_input", "random"], batch_size=2, skip_first=True)
    with pytest.raises(Exception, match="other settings"):
        run_deletion(lm, PROMPTS, tmp_path / "b", other, resume=True)


def test_cli_runs_and_resumes(saved_llama, tmp_path):
    out = tmp_path / "run"
    args = ["evaluate", "lm-deletion", "--model", str(saved_llama), "--limit", "3", "--batch-size", "2",
            "--methods", "grad_x_input,complete,random", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "| complete |" in r.output
    first = json.loads((out / "results.json").read_text())
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text()) == first


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "0"], "0 is not in the range x>=1"),
    (["--limit", "0"], "'--limit': 0 is not in the range x>=1"),
    (["--methods", "nope"], "unknown method"),
    (["--contrast", "top2"], "needs --loss diff"),
    (["--resume"], "nothing to resume"),
])
def test_cli_errors_are_one_line(saved_llama, tmp_path, extra, message):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["evaluate", "lm-deletion", "--model", str(saved_llama), "--out", str(out), *extra])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("attngrad: error:") and message in lines[0], r.output
    assert not (out / "shards").exists()


@pytest.mark.parametrize("damage, why", [
    (lambda d: d["curves"]["random"]["most"][0].__setitem__(3, 43.0), "does not match its digest"),  # an edited number
    (lambda d: d.pop("digest"), "does not match its digest"),                                        # no digest
    ("truncate", "unreadable"),
])
def test_a_damaged_shard_is_named_and_recomputed(lm, tmp_path, capsys, damage, why):
    settings = lambda: DeletionSettings(["grad_x_input", "random"], batch_size=2)  # noqa: E731
    whole = run_deletion(lm, PROMPTS, tmp_path / "a", settings())
    shard = tmp_path / "a" / "shards" / "batch_00000.json"
    if damage == "truncate":
        shard.write_text(shard.read_text()[:50])
    else:
        data = json.loads(shard.read_text())
        damage(data)
        shard.write_text(json.dumps(data))
    capsys.readouterr()
    resumed = run_deletion(lm, PROMPTS, tmp_path / "a", settings(), resume=True)
    assert resumed == whole
    err = capsys.readouterr().err
    assert f"{shard} cannot be used" in err and why in err


def test_a_tampered_shard_with_a_fresh_digest_of_the_wrong_shape_is_recomputed(lm, tmp_path, capsys):
    from attngrad.lm.deletion import _digest

    settings = lambda: DeletionSettings(["grad_x_input", "random"], batch_size=2)  # noqa: E731
    whole = run_deletion(lm, PROMPTS, tmp_path / "a", settings())
    shard = tmp_path / "a" / "shards" / "batch_00001.json"
    data = json.loads(shard.read_text())
    data["curves"]["random"]["least"] = [[0.0]]
    data["digest"] = _digest(data)
    shard.write_text(json.dumps(data))
    assert run_deletion(lm, PROMPTS, tmp_path / "a", settings(), resume=True) == whole
    assert "wrong shape" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_a_damaged_settings_file_is_one_line(saved_llama, tmp_path, content):
    out = tmp_path / "run"
    args = ["evaluate", "lm-deletion", "--model", str(saved_llama), "--limit", "2", "--batch-size", "2",
            "--methods", "random", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    (out / "settings.json").write_text(content)
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("attngrad: error:") and "settings" in lines[0], r.output


def test_a_refused_run_leaves_nothing_and_a_corrected_rerun_works(saved_llama, tmp_path, monkeypatch):
    """The core refuses at the first batch (as for a contrast equal to the target): no settings.json is left behind."""
    from attngrad.errors import AttngradError
    from attngrad.lm import deletion

    out = tmp_path / "run"
    base = ["evaluate", "lm-deletion", "--model", str(saved_llama), "--limit", "2", "--batch-size", "2",
            "--methods", "random", "--out", str(out)]

    def refuse(*args, **kwargs):
        raise AttngradError("the contrast equals the target (' Paris') for prompt 1; pick another token")

    with monkeypatch.context() as m:
        m.setattr(deletion, "evaluate_batch", refuse)
        r = CliRunner().invoke(main, base)
    assert r.exit_code == 2 and "contrast equals the target" in r.output, r.output
    assert not out.exists()
    assert CliRunner().invoke(main, base).exit_code == 0


def test_the_loss_and_its_contrast_are_checked_alike_in_every_token_test():
    from attngrad.lm.evidence import EvidenceSettings

    for make in (DeletionSettings, EvidenceSettings):
        with pytest.raises(AttngradError, match="a contrast needs --loss diff or normdiff"):
            make(["random"], contrast=" Rome").check()
        with pytest.raises(AttngradError, match="unknown loss 'kl'"):
            make(["random"], loss="kl").check()
        runner_up = make(["random"], loss="diff")
        runner_up.check()
        assert runner_up.contrast == "runner-up"
