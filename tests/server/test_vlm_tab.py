"""The explorer's Vision-language tab (``/api/vlm/*``) with FastAPI's test client, on a tiny random
LLaVA (ViT 4 x 4 patches + Llama, 3 layers each) saved as a Hugging Face folder with a word tokenizer.

Maps, token scores and the answer are compared with :class:`attngrad.vlm.VLMExplainer` loaded from
the same folder and called directly (the methods themselves are checked against explicit loops in
tests/vlm/test_vlm.py), the overlays with :func:`attngrad.viz.overlay` of that map, the token
colours with ``S / max|S|`` computed here.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
from fastapi.testclient import TestClient
from PIL import Image

from attngrad import viz
from attngrad.io import load_image
from attngrad.server import ServerSettings, create_app
from attngrad.server.images import sample_registry
from attngrad.vlm import READINGS, VLM_METHODS, VLMExplainer

from ..vlm.conftest import save_tiny_llava

PROMPT = "what animal is in this photo"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def direct(folder):
    return VLMExplainer.from_pretrained(folder)


@pytest.fixture(scope="module")
def client(tiny_explainer, folder):
    settings = ServerSettings(vlm_max_prompt_chars=200, vlm_answer_tokens=3)
    with TestClient(create_app(tiny_explainer, settings, model_name="tiny", vlm_model=str(folder))) as c:
        yield c


def _picture(sample: str = "el1") -> Image.Image:
    return load_image(sample_registry()[sample]["path"])


def _decoded(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_info_lists_methods_readings_and_the_model(client, folder):
    info = client.get("/api/vlm/info").json()
    assert info["available"] is True and info["reason"] is None and info["model"] == str(folder)
    assert info["methods"] == list(VLM_METHODS) and info["readings"] == list(READINGS)
    assert info["default_prompt"] == "What is in this photo?" and info["answer_tokens"] == 3
    details = {m["name"]: m for m in info["method_details"]}
    assert details["complete"]["signed"] and details["grad_x_input"]["signed"] and not details["gae"]["signed"]


@pytest.mark.parametrize(
    "data, kwargs",
    [
        ({}, {"loss": "logit"}),  # default: the most likely next token's logit
        ({"target": "zebra", "contrast": "horse"}, {"target": "zebra", "contrast": "horse", "loss": "diff"}),
        ({"target": "top2", "contrast": "top1", "loss": "normdiff"}, {"target": "top2", "contrast": "top1", "loss": "normdiff"}),
    ],
)
def test_every_method_and_reading_equals_the_library(client, direct, data, kwargs):
    methods, readings = list(VLM_METHODS), list(READINGS)
    r = client.post("/api/vlm/explain", data={"sample": "el1", "prompt": PROMPT, "methods": ",".join(methods),
                                              "readings": ",".join(readings), **data})
    assert r.status_code == 200, r.text
    body = r.json()
    picture = _picture()
    ref = direct.explain_methods(picture, PROMPT, methods, readings=readings, **kwargs)
    assert [(m["name"], m["reading"]) for m in body["results"]] == list(ref)
    shown = direct.preprocess.geometry(picture)
    for m in body["results"]:
        res = ref[(m["name"], m["reading"])]
        assert m["grid"] == [4, 4] and np.asarray(m["map"]).shape == (4, 4)
        assert np.asarray(m["map"]) == pytest.approx(res.maps[0].numpy(), rel=1e-5, abs=1e-7)
        assert m["signed"] == (m["name"] in ("complete", "grad_x_input"))
        pairs = [p for p in res.token_scores(0) if p[0] != "<image>"]
        assert [t["text"] for t in m["tokens"]] == [t for t, _ in pairs] == ["user", *PROMPT.split(), "answer"]
        assert [t["score"] for t in m["tokens"]] == pytest.approx([s for _, s in pairs], rel=1e-5, abs=1e-8)
        peak = max(abs(s) for _, s in pairs)
        if peak > 0:
            assert [t["normalized"] for t in m["tokens"]] == pytest.approx([s / peak for _, s in pairs], abs=1e-6)
        expected = np.asarray(viz.overlay(shown, res.maps[0].numpy(), signed=m["signed"]))
        assert np.abs(_decoded(m["overlay"]).astype(int) - expected.astype(int)).max() <= 1
    first = next(iter(ref.values()))
    assert body["target"]["id"] == int(first.targets[0]) and body["loss"] == kwargs["loss"]
    if "contrast" in kwargs:
        assert body["contrast"]["id"] == int(first.contrasts[0]) != body["target"]["id"]
    else:
        assert body["contrast"] is None and body["target"]["id"] == body["next_tokens"][0]["id"]
    answer = direct.generate(picture, PROMPT, max_new_tokens=3)
    assert body["answer"] == direct.adapter.tokenizer.decode(answer, skip_special_tokens=True)
    assert body["answer_tokens"] == direct.adapter.token_text(answer)


def test_defaults_and_one_pass_per_request(client, direct, monkeypatch):
    calls = []
    real = VLMExplainer._pass

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VLMExplainer, "_pass", counted)
    r = client.post("/api/vlm/explain", data={"sample": "n02391049_zebra", "prompt": "What is in this photo?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(m["name"], m["reading"]) for m in body["results"]] == [
        ("complete", "language"), ("complete", "vision"), ("gae", "language"), ("gae", "vision")]
    assert len(calls) == 1  # four maps, one forward + backward
    again = {"sample": "n02391049_zebra", "prompt": "What is in this photo?"}
    assert client.post("/api/vlm/explain", data=again).json() == body  # from the cache
    assert len(calls) == 1


def test_upload_equals_the_sample(client):
    path = sample_registry()["el1"]["path"]
    data = {"prompt": PROMPT, "methods": "complete", "readings": "vision"}
    by_sample = client.post("/api/vlm/explain", data={"sample": "el1", **data}).json()
    by_upload = client.post("/api/vlm/explain", data=data, files={"file": (path.name, path.read_bytes())}).json()
    assert by_upload["results"][0]["map"] == by_sample["results"][0]["map"]
    assert by_upload["image_id"] == by_sample["image_id"]


@pytest.mark.parametrize(
    "data, field, fragment",
    [
        ({"prompt": "   "}, "prompt", "question is empty"),
        ({"prompt": ""}, "prompt", "question is empty"),
        ({"prompt": "cat " * 60}, "prompt", "more than this server's 200"),
        ({"methods": "complete,lrp"}, "methods", "unknown method 'lrp'"),
        ({"readings": "language,audio"}, "readings", "unknown reading 'audio'"),
        ({"target": "zebra", "contrast": "zebra"}, "contrast", "contrast equals the target"),
        ({"contrast": "top1"}, "contrast", "contrast equals the target"),  # found in the pass
        ({"loss": "nope"}, "loss", "unknown loss"),
        ({"contrast": "horse", "loss": "logit"}, "loss", "two-token loss"),
        ({"loss": "diff"}, "contrast", "give a contrast"),
    ],
)
def test_bad_input_is_422_naming_the_field(client, data, field, fragment):
    r = client.post("/api/vlm/explain", data={"sample": "el1", "prompt": PROMPT, **data})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert fragment in detail["message"] and detail["field"] == field, detail
    assert "\n" not in detail["message"]


def test_not_an_image_is_400(client):
    r = client.post("/api/vlm/explain", data={"prompt": PROMPT}, files={"file": ("x.png", b"not an image")})
    assert r.status_code == 400 and "\n" not in r.json()["detail"]["message"]


def test_no_model_configured_is_one_line_409(tiny_explainer, tmp_path, monkeypatch):
    from attngrad.vlm import load

    monkeypatch.setattr(load, "PROJECTOR", tmp_path / "absent.safetensors")  # no shipped stand-in
    with TestClient(create_app(tiny_explainer)) as c:
        info = c.get("/api/vlm/info").json()
        assert info["available"] is False and "--vlm-model" in info["reason"]
        r = c.post("/api/vlm/explain", data={"sample": "el1", "prompt": PROMPT})
        assert r.status_code == 409, r.text
        message = r.json()["detail"]["message"]
        assert "no vision-language model is configured" in message and "--vlm-model" in message and "\n" not in message
        assert c.post("/api/predict", data={"sample": "el1"}).status_code == 200  # the image side still works


def test_the_model_loads_on_first_use_and_a_failed_load_is_409(tiny_explainer, direct, monkeypatch):
    loads = []

    def load(name_or_path=None, *, device=None, quiet=False):
        loads.append(name_or_path)
        if name_or_path == "broken":
            raise OSError("safetensors header is damaged")
        return direct

    monkeypatch.setattr(VLMExplainer, "from_pretrained", staticmethod(load))
    with TestClient(create_app(tiny_explainer, vlm_model="my/llava")) as c:
        info = c.get("/api/vlm/info").json()
        assert info["available"] and not info["loaded"] and loads == []
        assert c.post("/api/vlm/explain", data={"sample": "el1", "prompt": PROMPT}).status_code == 200
        assert c.post("/api/vlm/explain", data={"sample": "catdog", "prompt": PROMPT}).status_code == 200
        assert loads == ["my/llava"] and c.get("/api/vlm/info").json()["loaded"]
    with TestClient(create_app(tiny_explainer, vlm_model="broken")) as c:
        r = c.post("/api/vlm/explain", data={"sample": "el1", "prompt": PROMPT})
        assert r.status_code == 409 and "damaged" in r.json()["detail"]["message"]
        assert c.get("/api/vlm/info").json()["available"] is False


def test_the_page_has_the_tab(client):
    page = client.get("/").text
    assert 'id="tab-vlm"' in page and 'id="vlm-tab"' in page and "/static/vlm.js" in page
    script = client.get("/static/vlm.js")
    assert script.status_code == 200 and "/api/vlm/explain" in script.text


def test_direct_maps_are_not_all_zero(direct):
    """The comparison above is not vacuous: the tiny model gives non-zero maps for the gradient methods."""
    res = direct.explain_methods(_picture(), PROMPT, ["complete", "grad_x_input"], readings=["language", "vision"])
    for r in res.values():
        assert torch.count_nonzero(r.maps) > 0


def test_openapi_documents_the_fields_sent(client):
    spec = client.get("/openapi.json").json()

    def schema(path, verb):
        ref = spec["paths"][path][verb]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]

    body = client.post("/api/vlm/explain", data={"sample": "el1", "prompt": PROMPT}).json()
    explain = schema("/api/vlm/explain", "post")
    assert set(body) == set(explain["properties"])
    assert set(body["results"][0]) == set(spec["components"]["schemas"]["VLMResult"]["properties"])
    assert set(client.get("/api/vlm/info").json()) == set(schema("/api/vlm/info", "get")["properties"])
    assert "409" in spec["paths"]["/api/vlm/explain"]["post"]["responses"]


def test_serve_option_vlm_model(monkeypatch, tiny_explainer, folder, tmp_path):
    import uvicorn
    from click.testing import CliRunner

    import attngrad.models
    from attngrad.cli import main
    from attngrad.vlm import load

    calls = []
    monkeypatch.setattr(attngrad.models, "load_model", lambda *a, **k: tiny_explainer.adapter)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    result = CliRunner().invoke(main, ["serve", "--no-lm", "--vlm-model", str(folder)])
    assert result.exit_code == 0, result.output
    ex = calls[-1].state.explorer
    assert ex.vlm_model == str(folder) and ex.vlm_missing is None and ex.vlm_loaded is None  # lazy
    monkeypatch.setattr(load, "PROJECTOR", tmp_path / "absent.safetensors")
    result = CliRunner().invoke(main, ["serve", "--no-lm"])
    assert result.exit_code == 0 and "--vlm-model" in calls[-1].state.explorer.vlm_missing
    assert "Vision-language tab is off" in result.output
    result = CliRunner().invoke(main, ["serve", "--no-lm", "--vlm-model", str(tmp_path)])
    assert result.exit_code == 2 and "not a Hugging Face model folder" in result.output


def test_without_vlm_model_the_shipped_stand_in_is_used_when_shipped(tiny_explainer, direct, tmp_path, monkeypatch):
    from attngrad.vlm import load

    shipped = tmp_path / "projector.safetensors"
    shipped.write_bytes(b"")
    monkeypatch.setattr(load, "PROJECTOR", shipped)
    loads = []

    def stand_in(name_or_path=None, *, device=None, quiet=False):
        loads.append(name_or_path)
        return direct

    monkeypatch.setattr(VLMExplainer, "from_pretrained", staticmethod(stand_in))
    with TestClient(create_app(tiny_explainer)) as c:
        info = c.get("/api/vlm/info").json()
        assert info["available"] and info["model"] == load.STAND_IN and loads == []
        assert c.post("/api/vlm/explain", data={"sample": "el1", "prompt": PROMPT}).status_code == 200
        assert loads == [None]  # VLMExplainer.from_pretrained(None): the stand-in
