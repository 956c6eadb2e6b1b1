"""The in-context evidence test (attngrad.lm.evidence, `evaluate lm-evidence`): the seeded generator,
token spans through a BPE tokenizer's offsets, the metrics against hand-computed values, batched =
one prompt at a time (metrics recomputed here with numpy), resumption and tampered shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.lm import LMExplainer
from attngrad.lm import evidence as ev
from attngrad.lm.evidence_prompts import KINDS, evidence_prompts, token_spans

METHODS = ["complete", "gae", "raw_attention", "grad_x_input"]


def _bpe_tokenizer(texts):
    """A small byte-level BPE tokenizer trained here on ``texts`` (merges cut words unevenly)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def test_generator_is_seeded_and_covers_the_kinds():
    a, b, c = evidence_prompts(40, seed=3), evidence_prompts(40, seed=3), evidence_prompts(40, seed=4)
    assert a == b and a != c
    assert {p.kind for p in a} == set(KINDS)
    for p in a:
        (start, end), = p.evidence
        fact = p.text[start:end]
        answer = p.target.strip()
        # the answering fact names the asked person and holds the answer (or its predecessor, arithmetic)
        assert p.text.split("Answer: ")[1].split()[0] in fact
        if p.kind != "arithmetic":
            assert fact.split()[-1 if p.kind != "count" else -2] == answer
        assert all(p.text[s:e] not in (fact,) for s, e in p.distractors)
    distract = next(p for p in a if p.kind == "distractor")
    who = distract.text.split("Answer: ")[1].split()[0]
    assert any(distract.text[s:e] .startswith(f"{who} works in") for s, e in distract.distractors)


def test_spans_decode_to_the_facts_through_bpe_offsets():
    prompts = evidence_prompts(30, seed=0)
    tok = _bpe_tokenizer([p.text for p in prompts])
    for p in prompts:
        ids = tok(p.text)["input_ids"]
        spans = token_spans(tok, p.text, p.evidence + p.distractors)
        for (s, e), positions in zip(p.evidence + p.distractors, spans):
            assert positions == list(range(positions[0], positions[-1] + 1))  # contiguous
            assert tok.decode([ids[j] for j in positions]).strip() == p.text[s:e]


def test_metrics_by_hand_on_five_tokens():
    s = [0.5, -1.0, 2.0, 1.0, -0.5]
    m = ev.prompt_metrics(s, [2, 3], [1], signed_method=True)
    assert m["evidence_share"] == pytest.approx(3 / 3.5)
    assert m["top1"] == 1.0 and m["topk"] == 1.0
    assert m["distractor_negative"] == pytest.approx(1 / 1.5)
    assert m["chance"] == pytest.approx(2 / 5)
    m = ev.prompt_metrics(s, [0, 1], [4], signed_method=True)
    assert m["evidence_share"] == pytest.approx(0.5 / 3.5)
    assert m["top1"] == 0.0 and m["topk"] == 0.0  # the top two are positions 2 and 3
    assert m["distractor_negative"] == pytest.approx(0.5 / 1.5)
    m = ev.prompt_metrics(s, [0, 3], [1], signed_method=False, skip_first=True)
    assert m["evidence_share"] == pytest.approx(1 / 3)  # position 0 left out of everything
    assert m["top1"] == 0.0 and m["topk"] == 0.0 and np.isnan(m["distractor_negative"])
    assert m["chance"] == pytest.approx(1 / 4)
    m = ev.prompt_metrics([3.0, 1.0, 2.0, 0.0, 0.0], [1, 2], [], signed_method=False)
    assert m["topk"] == 0.5 and m["evidence_share"] == pytest.approx(0.5)


def _word_tokenizer():
    """A word-level fast tokenizer over every word of the generator's tables."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2}
    pre = pre_tokenizers.Whitespace()
    for p in evidence_prompts(400, seed=0):
        for word, _ in pre.pre_tokenize_str(p.text + p.target):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(scope="module")
def lm():
    """A tiny random Llama (2 layers, grouped-query attention) with room for the prompts' 50 tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _word_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, bos_token_id=None, eos_token_id=2, attn_implementation="eager")
    return LMExplainer(LlamaForCausalLM(cfg).eval(), tok)


def _hand(scores, evidence, distractors, signed_method):
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = np.maximum(s, 0), np.maximum(-s, 0)
    ev_mask = np.zeros(len(s), bool)
    ev_mask[evidence] = True
    order = sorted(range(len(s)), key=lambda j: (-s[j], j))
    k = len(evidence)
    return {"evidence_share": pos[ev_mask].sum() / pos.sum() if pos.sum() else 0.0,
            "top1": float(ev_mask[order[0]]), "topk": ev_mask[order[:k]].mean(),
            "distractor_negative": neg[distractors].sum() / neg.sum() if signed_method else np.nan}


def test_batch_equals_one_at_a_time(lm):
    prompts = evidence_prompts(5, seed=1)
    settings = ev.EvidenceSettings(METHODS, batch_size=5)
    settings.check()
    batched = ev.evaluate_batch(lm, prompts, settings)
    for i, p in enumerate(prompts):
        target = lm.adapter.word_ids(p.target)[0]
        spans = token_spans(lm.adapter.tokenizer, p.text, p.evidence + p.distractors)
        distractors = [j for s in spans[1:] for j in s]
        for name in METHODS:
            res = lm.explain(p.text, method=name, target=target)
            want = _hand(res.scores(0).numpy(), spans[0], distractors, name in ("complete", "grad_x_input"))
            for metric, value in want.items():
                np.testing.assert_allclose(batched[f"{name}/{metric}"][i], value, rtol=1e-4, atol=1e-6)


def _everyone_answers(monkeypatch):
    monkeypatch.setattr(ev, "answered", lambda explainer, prompts, **kw: [True] * len(prompts))


def test_resume_after_a_killed_run_and_tampered_shard(lm, tmp_path, monkeypatch, capsys):
    _everyone_answers(monkeypatch)

    def settings():
        return ev.EvidenceSettings(["complete", "gae"], prompts=7, candidates=7, batch_size=3)

    full = ev.run_evidence(lm, tmp_path / "full", settings())
    want = ev.read_npz_per_prompt(tmp_path / "full")

    def killer(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ev.run_evidence(lm, tmp_path / "run", settings(), progress=killer)
    assert sorted(p.name for p in (tmp_path / "run" / "shards").iterdir()) == ["batch-00000.npz", "batch-00001.npz"]
    with pytest.raises(AttngradError, match="already holds a run"):
        ev.run_evidence(lm, tmp_path / "run", settings())
    calls = []
    real = ev.evaluate_batch
    monkeypatch.setattr(ev, "evaluate_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = ev.run_evidence(lm, tmp_path / "run", settings(), resume=True)
    assert len(calls) == 1  # only the third batch
    assert json.dumps(again) == json.dumps(full)
    # tamper with a stored value, keeping the digest and checksum: recomputed, same result
    path = tmp_path / "run" / "shards" / "batch-00000.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["complete/evidence_share"] = arrays["complete/evidence_share"] + 0.5
    np.savez(path, **arrays)
    calls.clear()
    capsys.readouterr()
    assert json.dumps(ev.run_evidence(lm, tmp_path / "run", settings(), resume=True)) == json.dumps(full)
    assert len(calls) == 1 and "checksum" in capsys.readouterr().err
    got = ev.read_npz_per_prompt(tmp_path / "run")
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(AttngradError, match="other settings"):
        ev.run_evidence(lm, tmp_path / "run", ev.EvidenceSettings(["complete"], prompts=7, candidates=7,
                                                                  batch_size=3), resume=True)
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["prompts"] == 7 and set(summary["methods"]) == {"complete", "gae"}


def test_cli_runs_on_a_model_folder(lm, tmp_path, monkeypatch):
    _everyone_answers(monkeypatch)
    folder = tmp_path / "tiny"
    lm.adapter.model.save_pretrained(folder)
    lm.adapter.tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    args = ["evaluate", "lm-evidence", "--model", str(folder), "--out", str(out), "--prompts", "4",
            "--candidates", "4", "--methods", "complete,random", "-b", "2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert (out / "results.md").exists() and (out / "per_prompt.npz").exists()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "already holds a run" in r.output


def test_cli_warns_when_fewer_prompts_qualify_and_writes_strict_json(lm, tmp_path, monkeypatch):
    """Two of six candidates answered while five were asked for: a warning says so; an interval of so few prompts
    is undefined and is written as null (strict JSON), not as NaN."""
    monkeypatch.setattr(ev, "answered", lambda explainer, prompts, **kw: [i < 2 for i in range(len(prompts))])
    folder = tmp_path / "tiny"
    lm.adapter.model.save_pretrained(folder)
    lm.adapter.tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["evaluate", "lm-evidence", "--model", str(folder), "--out", str(out), "--prompts", "5",
                                  "--candidates", "6", "--methods", "complete,random"])
    assert r.exit_code == 0, r.output
    assert "attngrad: warning: only 2 of the 5 prompts asked for" in r.stderr
    text = (out / "results.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    assert summary["prompts"] == 2 and "null" in text


def test_a_refused_setting_leaves_no_new_folder(lm, tmp_path, monkeypatch):
    """An error in the first batch (here a contrast equal to every target) removes the folder the run created."""
    _everyone_answers(monkeypatch)
    settings = ev.EvidenceSettings(["complete"], loss="diff", contrast="top2", prompts=3, candidates=3)
    monkeypatch.setattr(ev, "evaluate_batch", lambda *a, **k: (_ for _ in ()).throw(AttngradError("refused")))
    with pytest.raises(AttngradError, match="refused"):
        ev.run_evidence(lm, tmp_path / "new", settings)
    assert not (tmp_path / "new").exists()
    with pytest.raises(AttngradError, match="top1 is the answer itself"):
        ev.EvidenceSettings(["complete"], loss="diff", contrast="top1").check()
