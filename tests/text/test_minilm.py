"""Integration on the real all-MiniLM-L6-v2 (``attngrad[text]``); skipped when the package is missing."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main

pytestmark = pytest.mark.slow

A = "How do I fix a flat bicycle tire?"
B = "My car tire is flat and I need a new wheel."


def test_embeddings_are_pooled_as_sentence_transformers_does(minilm, minilm_dir):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    texts = [A, B, "The striker scored twice in the final."]
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_tensor=True)
    ours = minilm.label_embeddings(texts)
    cos = torch.nn.functional.cosine_similarity(ours, reference.to(ours.dtype), dim=-1)
    assert (cos > 1 - 1e-5).all()
    sim = minilm.scores(A, against=B)
    torch.testing.assert_close(sim[0, 0], torch.nn.functional.cosine_similarity(reference[0], reference[1], dim=0),
                               rtol=1e-4, atol=1e-5)


def test_similarity_maps_on_the_issue_example(minilm):
    res = minilm.explain_methods(A, ["complete", "gae"], against=B)
    gae_words = res["gae"].words(0)
    assert [w.text for w in gae_words] == ["How", "do", "I", "fix", "a", "flat", "bicycle", "tire", "?"]
    assert max(gae_words, key=lambda w: w.score).text in {"tire", "flat"}
    assert max(res["gae"].reverse.words(0), key=lambda w: w.score).text in {"tire", "flat"}
    complete = res["complete"].maps
    assert (complete > 0).any() and (complete < 0).any()
    assert 0.5 < float(res["complete"].logits[0, 0]) < 0.9


def test_zero_shot_picks_the_right_description(minilm):
    texts = [A, "The striker scored twice in the final.", "The bank raised interest rates on loans."]
    scores = minilm.scores(texts, labels="sports,finance,repair")
    assert scores.argmax(dim=1).tolist() == [2, 0, 1]
    res = minilm.explain(texts, labels="sports,finance,repair", loss="normdiff", contrast="top2")
    assert res.target_names == ["repair", "sports", "finance"]


def test_padded_batch_equals_singles_on_minilm(minilm):
    texts = [A, "Rain.", B]
    batch = minilm.explain_methods(texts, ["complete", "rollout"], labels="sports,finance,repair")
    for i, text in enumerate(texts):
        for name, single in minilm.explain_methods(text, ["complete", "rollout"], labels="sports,finance,repair").items():
            n = single.maps.shape[1]
            torch.testing.assert_close(batch[name].maps[i, :n], single.maps[0], rtol=1e-4, atol=1e-6)


def test_cli_default_model_end_to_end(tmp_path):
    result = CliRunner().invoke(main, ["explain-text", A, "--against", B, "--method", "complete,gae", "--out", str(tmp_path),
                                       "--no-color"])
    assert result.exit_code == 0, result.output
    assert "[gae, cos(A, B) = 0.68" in result.stdout and (tmp_path / "explanation.html").exists()
    result = CliRunner().invoke(main, ["explain-text", A, "--labels", "sports,finance,repair", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "logit of 'repair'" in result.stdout
