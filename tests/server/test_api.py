"""The HTTP API with FastAPI's test client: every endpoint and every error.

One app per module, on the tiny random ViT (32x32 input, 5 classes) so the
tests stay fast; results are compared with the library called directly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
from fastapi.testclient import TestClient

from attngrad import viz
from attngrad.demo import asset_image
from attngrad.methods import METHODS
from attngrad.server import ServerSettings, create_app
from attngrad.server.cache import LRUCache, key_of
from attngrad.server.jobs import Job, JobCancelled, JobManager, QueueFull, WorkQueue
from attngrad.server.schemas import RewriteResult, TransferResult

LIMIT = 64 * 1024
EL1 = asset_image("el1.jpg")


@pytest.fixture(scope="module")
def app(tiny_explainer):
    return create_app(tiny_explainer, ServerSettings(max_upload_bytes=LIMIT, queue_capacity=3), model_name="tiny")


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def _png_bytes(size=(40, 30), colour=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (valid CRC): a decompression bomb's header."""
    assert png[12:16] == b"IHDR"
    data = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + data + struct.pack(">I", zlib.crc32(b"IHDR" + data)) + png[33:]


def _message(response) -> str:
    return response.json()["detail"]["message"]


# -- endpoints ------------------------------------------------------------------------------


def test_info_lists_methods_losses_and_the_viz_colormap(client):
    info = client.get("/api/info").json()
    assert info["model"] == "tiny"
    assert info["methods"] == list(METHODS)
    assert info["default_methods"] == ["gae", "complete"]
    assert info["losses"][:2] == ["logit", "normdiff"]
    stops = info["colormap"]  # viz.CMAP ("bwr") on [-1, 1]: blue, white at 0, red
    assert len(stops) == 21 and stops[0] == "#0000ff" and stops[-1] == "#ff0000"
    assert all(int(stops[10][i : i + 2], 16) >= 250 for i in (1, 3, 5))  # white at 0 (up to the 8-bit LUT)
    reds = [int(c[1:3], 16) for c in stops]
    assert reds[:11] == sorted(reds[:11]) and reds[0] == 0  # blue side: red channel rises towards 0
    assert info["limits"]["max_upload_bytes"] == LIMIT
    assert ServerSettings().max_upload_bytes == 20 * 1024 * 1024


UNSIGNED = ("gae", "absolute", "rollout", "raw_attention", "attn_gradcam")  # issue 15: red is magnitude


def test_info_and_explain_say_per_method_what_red_means(client):
    details = {m["name"]: m for m in client.get("/api/info").json()["method_details"]}
    assert list(details) == list(METHODS)
    assert details["complete"]["signed"] is True and details["complete"]["red"] == "support"
    assert "blue opposes" in details["complete"]["legend"]
    for name in UNSIGNED:
        assert details[name]["signed"] is False and details[name]["red"] == "magnitude", name
        assert "magnitude" in details[name]["legend"] and "oppose" not in details[name]["legend"]
    body = client.post("/api/explain", data={"sample": "el1", "target": "zebra", "methods": "gae,complete"}).json()
    shown = {m["name"]: (m["signed"], m["legend"]) for m in body["methods"]}
    assert shown == {n: (details[n]["signed"], details[n]["legend"]) for n in ("gae", "complete")}


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_openapi_describes_every_response(client):
    """Every route's success answer has a schema: a model with properties, or bytes of a media type."""
    spec = client.get("/openapi.json").json()
    operations = [(path, verb, op) for path, ops in spec["paths"].items() for verb, op in ops.items()]
    assert len(operations) == 19  # + /api/lm/info, /api/lm/explain, /api/lm/generate, /api/vlm/info, /api/vlm/explain
    for path, verb, op in operations:
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert success, (verb, path)
        for code, response in success.items():
            assert response.get("content"), (verb, path, code)
            for media, body in response["content"].items():
                schema = _resolve(spec, body.get("schema") or {})
                if media == "application/json":
                    assert schema.get("properties"), (verb, path, code, media)
                else:
                    assert schema.get("type") == "string", (verb, path, code, media)
    # the documented fields are the fields sent
    explain = _resolve(spec, spec["paths"]["/api/explain"]["post"]["responses"]["200"]["content"]["application/json"]["schema"])
    body = client.post("/api/explain", data={"sample": "el1", "methods": "gae"}).json()
    assert set(body) == set(explain["properties"])
    method = _resolve(spec, explain["properties"]["methods"]["items"])
    assert set(body["methods"][0]) == set(method["properties"])
    info = _resolve(spec, spec["paths"]["/api/info"]["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(client.get("/api/info").json()) == set(info["properties"])


def test_classes_and_search(client, tiny_explainer):
    everything = client.get("/api/classes").json()["classes"]
    assert [c["label"] for c in everything] == tiny_explainer.labels
    assert client.get("/api/classes", params={"search": "ZEB"}).json()["classes"] == [{"index": 2, "label": "zebra"}]


def test_samples_by_id_and_their_images(client):
    samples = {s["id"]: s for s in client.get("/api/samples").json()["samples"]}
    assert samples["el1"]["title"] == "zebra + African elephant"
    assert samples["n01871265_tusker"]["title"] == "tusker"
    assert len(samples) == 12
    r = client.get(samples["el1"]["url"])
    assert r.status_code == 200 and r.content == EL1.read_bytes()


def test_index_static_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/explain", "/api/classes", "/api/jobs/{job_id}"} <= set(paths)
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["queue"]["capacity"] == 3


def test_predict_matches_the_library_for_sample_upload_and_image_id(client, tiny_explainer):
    data = EL1.read_bytes()
    expected = tiny_explainer.predict(EL1, k=3)[0]
    by_sample = client.post("/api/predict", data={"sample": "el1", "k": "3"}).json()
    assert by_sample["image_id"] == hashlib.sha256(data).hexdigest()
    assert [p["index"] for p in by_sample["predictions"]] == [p.index for p in expected]
    assert [p["probability"] for p in by_sample["predictions"]] == pytest.approx([p.probability for p in expected], abs=1e-6)
    by_upload = client.post("/api/predict", files={"file": ("x.jpg", data, "image/jpeg")}, data={"k": "3"}).json()
    by_id = client.post("/api/predict", data={"image_id": by_sample["image_id"], "k": "3"}).json()
    assert by_upload == by_sample == by_id


def test_explain_returns_the_library_maps_overlays_and_downloads(client, tiny_explainer):
    r = client.post("/api/explain", data={"sample": "el1", "target": "zebra", "methods": "gae,complete"})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = tiny_explainer.explain_methods(EL1, ["gae", "complete"], target="zebra")
    assert body["target"] == {"index": 2, "label": "zebra", "logit": pytest.approx(float(expected["gae"].logits[0, 2]))}
    assert body["contrast"] is None and body["loss"] == "logit" and body["grid"] == [4, 4]
    assert [m["name"] for m in body["methods"]] == ["gae", "complete"]
    for m in body["methods"]:
        want = expected[m["name"]].maps[0].numpy()
        got = np.array(m["map"])
        assert got.shape == (4, 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        assert m["peak"] == pytest.approx(float(np.abs(want).max()))
        png = base64.b64decode(m["overlay"].removeprefix("data:image/png;base64,"))
        overlay = np.asarray(Image.open(io.BytesIO(png)))
        reference = np.asarray(viz.overlay(expected[m["name"]].images[0], want))
        assert overlay.shape == (32, 32, 3)
        assert np.abs(overlay.astype(int) - reference.astype(int)).max() <= 1
        assert client.get(m["png_url"]).content == png
        npy = client.get(m["npy_url"])
        assert npy.headers["content-disposition"].endswith(f'zebra_{m["name"]}.npy"')
        np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), got.astype(np.float32))
    # complete keeps the sign (eq. 5): some patch is negative; gae (positive gradient only) has none
    complete = np.array(body["methods"][1]["map"])
    assert complete.min() < 0 < complete.max()
    assert np.array(body["methods"][0]["map"]).min() >= 0


def test_explain_with_a_contrast_uses_the_normalised_difference(client, tiny_explainer):
    body = client.post("/api/explain", data={"sample": "el1", "target": "zebra", "contrast": "cat", "methods": "complete"}).json()
    assert body["loss"] == "normdiff"
    assert body["contrast"]["label"] == "cat"
    want = tiny_explainer.explain(EL1, target="zebra", contrast="cat", loss="normdiff", method="complete").maps[0]
    np.testing.assert_allclose(np.array(body["methods"][0]["map"]), want.numpy(), rtol=1e-5, atol=1e-7)
    plain = tiny_explainer.explain(EL1, target="zebra", method="complete").maps[0]
    assert not torch.allclose(plain, want)


def test_results_are_cached_by_content_hash(client, app):
    ex = app.state.explorer
    form = {"sample": "n01871265_tusker", "target": "dog", "methods": "gae"}
    first = client.post("/api/explain", data=form).json()
    done, hits = ex.queue.completed, ex.results.hits
    upload = {"file": ("same.jpg", asset_image("n01871265_tusker.jpg").read_bytes(), "image/jpeg")}
    second = client.post("/api/explain", data={k: v for k, v in form.items() if k != "sample"}, files=upload).json()
    assert second == first
    assert ex.queue.completed == done and ex.results.hits == hits + 1
    assert first["result_id"] == key_of("explain", first["image_id"], ["gae"], "dog", None, "logit", 0, None)


# -- errors ---------------------------------------------------------------------------------


def test_upload_over_the_size_limit_is_413(client):
    too_big = b"\xff" * (LIMIT + 1)
    r = client.post("/api/predict", files={"file": ("big.jpg", too_big, "image/jpeg")})
    assert r.status_code == 413 and "over the 0.1 MB limit" in _message(r)
    # a body far over the limit is refused from its Content-Length, before it is parsed
    huge = b"\0" * (2 * LIMIT + (1 << 20) + 1)
    r = client.post("/api/explain", content=huge, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "request body over" in _message(r)
    # a streamed (chunked) body with no Content-Length is cut off once it passes the limit
    chunks = (b"x" * 65536 for _ in range(40))
    r = client.post("/api/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "request body over" in _message(r)


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("notes.txt", b"this is not an image", "not an image"),
        ("half.jpg", EL1.read_bytes()[: len(EL1.read_bytes()) // 2], "truncated"),
        ("empty.png", b"", "empty"),
        ("bomb.png", _with_ihdr_size(_png_bytes(), 10_000, 10_000), "over the limit"),
        ("megabomb.png", _with_ihdr_size(_png_bytes(), 60_000, 60_000), "too large to decode safely"),
    ],
)
def test_bad_uploads_are_400_with_a_clear_message(client, name, data, words):
    r = client.post("/api/explain", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 400, r.text
    message = _message(r)
    assert words in message and repr(name) in message
    assert "/tmp" not in message and "attngrad-upload" not in message  # no server paths leak


def test_unknown_class_is_422_listing_valid_values(client, tiny_explainer):
    for field in ("target", "contrast"):
        r = client.post("/api/explain", data={"sample": "el1", field: "zebraa", "target": "cat"} | {field: "zebraa"})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert detail["field"] == field and detail["valid"] == tiny_explainer.labels
        assert "did you mean 'zebra'" in detail["message"]
    r = client.post("/api/explain", data={"sample": "el1", "target": "7"})
    assert r.status_code == 422 and "out of range" in _message(r)
    r = client.post("/api/explain", data={"sample": "el1", "target": "top9"})
    assert r.status_code == 422 and "between 1 and 5" in _message(r)


def test_unknown_method_or_loss_is_422_listing_valid_values(client):
    r = client.post("/api/explain", data={"sample": "el1", "methods": "gae,magic"})
    assert r.status_code == 422
    assert r.json()["detail"]["valid"] == list(METHODS) and "'magic'" in _message(r)
    r = client.post("/api/explain", data={"sample": "el1", "loss": "hinge"})
    assert r.status_code == 422 and r.json()["detail"]["valid"][:2] == ["logit", "normdiff"]
    r = client.post("/api/explain", data={"sample": "el1", "loss": "diff"})
    assert r.status_code == 422 and "give a contrast class" in _message(r)
    r = client.post("/api/predict", data={"sample": "el1", "k": "0"})
    assert r.status_code == 422
    for layer in ("-1", "3"):  # the tiny ViT has layers 0..2
        r = client.post("/api/explain", data={"sample": "el1", "start_layer": layer})
        assert r.status_code == 422 and r.json()["detail"]["valid"] == [0, 1, 2]
    assert client.post("/api/explain", data={"sample": "el1", "start_layer": "2"}).status_code == 200


def test_no_filesystem_paths_from_clients(client):
    for bad in ("../../../etc/passwd", "/etc/passwd", "el1.jpg", str(EL1)):
        r = client.post("/api/predict", data={"sample": bad})
        assert r.status_code == 422, bad
        assert "el1" in r.json()["detail"]["valid"]
        assert "root:" not in r.text
    assert client.get("/api/samples/..%2F..%2Fetc%2Fpasswd/image").status_code == 404
    assert client.get("/api/samples/el1.jpg/image").status_code == 404
    assert client.post("/api/predict", data={"image_id": "/etc/passwd"}).status_code == 404
    r = client.post("/api/predict", data={"path": str(EL1)})  # no such field: nothing is read
    assert r.status_code == 422 and "exactly one image" in _message(r)


def test_exactly_one_image_source(client):
    assert client.post("/api/predict", data={}).status_code == 422
    r = client.post("/api/predict", data={"sample": "el1", "image_id": "0" * 64})
    assert r.status_code == 422 and "exactly one image" in _message(r)
    r = client.post("/api/explain", data={"image_id": "0" * 64})
    assert r.status_code == 404 and "upload the image again" in _message(r)


def test_unknown_results_are_404(client):
    body = client.post("/api/explain", data={"sample": "el1", "target": "cat", "methods": "gae"}).json()
    rid = body["result_id"]
    assert client.get(f"/api/results/{'f' * 64}/gae.png").status_code == 404
    assert client.get(f"/api/results/{rid}/complete.png").json()["detail"]["valid"] == ["gae"]
    assert client.get(f"/api/results/{rid}/gae.txt").status_code == 404


def test_full_queue_answers_503_with_retry_after(client, app):
    ex = app.state.explorer
    release = threading.Event()
    blockers = [ex.queue.submit(release.wait, 10) for _ in range(ex.queue.capacity)]
    try:
        r = client.post("/api/explain", data={"sample": "el1", "target": "dog", "methods": "rollout"})
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1 and r.json()["detail"]["retry_after"] >= 1
        assert ex.queue.stats()["in_flight"] == ex.queue.capacity
        r = client.post("/api/jobs/transfer", data={"sample": "el1", "steps": "1"})
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    finally:
        release.set()
        for b in blockers:
            b.result(timeout=10)
    r = client.post("/api/explain", data={"sample": "el1", "target": "dog", "methods": "rollout"})
    assert r.status_code == 200


def test_explain_with_a_guide_image_matches_the_library(client, tiny_explainer):
    from attngrad.io import load_image

    zebra = asset_image("n02391049_zebra.jpg")
    guide_class = tiny_explainer.predict(zebra, k=1)[0][0].index
    target = (guide_class + 1) % 5
    form = {"sample": "el1", "guide_sample": "n02391049_zebra", "target": str(target), "methods": "gae,complete"}
    body = client.post("/api/explain", data=form).json()
    assert body["guided"] is True and body["grid"] == [4, 2]  # the left half of the 4 x 4 stitched grid
    want = tiny_explainer.explain_methods(load_image(EL1), ["gae", "complete"], target=target, guide=load_image(zebra))
    for m in body["methods"]:
        np.testing.assert_allclose(np.array(m["map"]), want[m["name"]].maps[0].numpy(), rtol=1e-5, atol=1e-7)
    assert body["predictions"][0]["index"] == tiny_explainer.predict(EL1, k=1)[0][0].index  # the image's own top-1
    r = client.post("/api/explain", data=form | {"target": str(guide_class)})
    assert r.status_code == 422 and "choose a guide image of another class" in _message(r)
    r = client.post("/api/explain", data=form | {"guide_sample": "../el1"})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "guide_sample"


WAIT_S = 60  # the longest any test waits for a job or a stream (a hang fails the test instead)


def _wait_until(predicate, what: str, timeout: float = WAIT_S, poll_s: float = 0.02):
    """Poll ``predicate()`` until it returns a true value (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(poll_s)


def _finish(client, started) -> dict:
    assert started.status_code == 202, started.text
    url = started.json()["status_url"]

    def finished():
        snap = client.get(url).json()
        return snap if snap["status"] in ("done", "failed", "cancelled") else None

    return _wait_until(finished, "the job did not finish", poll_s=0.05)


def test_rewrite_job_returns_the_library_numbers_and_maps(client, tiny_explainer):
    from attngrad.experiments.rewrite import rewrite
    from attngrad.io import load_image

    top = tiny_explainer.predict(EL1, k=5)[0]
    to = top[-1].index  # the least likely class
    snap = _finish(client, client.post("/api/jobs/rewrite", data={"sample": "el1", "to": str(to), "steps": "3"}))
    assert snap["status"] == "done", snap["error"]
    want = rewrite(tiny_explainer, load_image(EL1), to, top[0].index, steps=3)
    got = snap["result"]["numbers"]
    assert got["to"] == tiny_explainer.labels[to] and got["from"] == top[0].label
    assert (got["steps"], got["linf_255"], got["success"]) == (want.steps, want.linf, want.success)
    assert got["linf_255"] <= 2  # the default budget, 2/255
    assert [p["index"] for p in got["after_top5"]] == [p.index for p in want.after]
    cells = snap["result"]["maps"]
    assert [(c["image"], c["class"]) for c in cells] == [
        ("before", top[0].label), ("before", tiny_explainer.labels[to]),
        ("after", top[0].label), ("after", tiny_explainer.labels[to]),
    ]
    assert RewriteResult.model_validate(snap["result"]).model_dump(by_alias=True) == snap["result"]  # documented shape
    rewritten = Image.open(io.BytesIO(base64.b64decode(snap["result"]["rewritten"].split(",", 1)[1])))
    np.testing.assert_array_equal(np.asarray(rewritten), np.asarray(want.rewritten))


def test_transfer_job_returns_one_frame_per_step(client, tiny_explainer):
    from attngrad.experiments.transfer import attention_transfer

    form = {"sample": "el1", "target": "zebra", "opposing": "cat", "steps": "2"}
    snap = _finish(client, client.post("/api/jobs/transfer", data=form))
    assert snap["status"] == "done", snap["error"]
    res = snap["result"]
    assert TransferResult.model_validate(res).model_dump() == res  # the documented shape, every field
    assert (res["target"], res["opposing"], len(res["frames"])) == ("zebra", "cat", 3)
    want = attention_transfer(tiny_explainer, EL1, "zebra", "cat", steps=2)
    assert [f["target_logit"] for f in res["frames"]] == pytest.approx([s.target_logit for s in want.steps], abs=1e-5)
    logits = tiny_explainer.predict(EL1, k=5)[0]
    assert res["frames"][0]["target_logit"] == pytest.approx(next(p.logit for p in logits if p.label == "zebra"), abs=1e-5)
    assert res["frames"][2]["target_logit"] < res["frames"][0]["target_logit"]  # the target logit is descended
    steps = [e for e in snap["events"] if "step" in e]  # one progress event per step, with its numbers
    assert [e["step"] for e in steps] == [0, 1, 2]
    assert [e["target_logit"] for e in steps] == pytest.approx([f["target_logit"] for f in res["frames"]], abs=1e-5)


def test_job_requests_are_validated(client):
    r = client.post("/api/jobs/rewrite", data={"sample": "el1"})
    assert r.status_code == 422  # 'to' is required
    r = client.post("/api/jobs/rewrite", data={"sample": "el1", "to": "unicorn"})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "to" and "valid" in r.json()["detail"]
    r = client.post("/api/jobs/rewrite", data={"sample": "el1", "to": "cat", "eps": "0"})
    assert r.status_code == 422
    r = client.post("/api/jobs/transfer", data={"sample": "el1", "optimizer": "lbfgs"})
    assert r.status_code == 422 and r.json()["detail"]["valid"] == ["adam", "sgd"]
    r = client.post("/api/jobs/transfer", data={"sample": "el1", "opposing": "zebraa"})
    assert r.status_code == 422 and "did you mean 'zebra'" in _message(r)
    r = client.post("/api/jobs/transfer", data={"sample": "nope"})
    assert r.status_code == 422


def test_failing_job_reports_the_library_message(client, tiny_explainer):
    top1 = tiny_explainer.predict(EL1, k=1)[0][0].label
    snap = _finish(client, client.post("/api/jobs/rewrite", data={"sample": "el1", "to": top1, "steps": "2"}))
    assert snap["status"] == "failed" and "already classified as" in snap["error"]


# -- jobs -----------------------------------------------------------------------------------


def _stepper(steps: int, pause_s: float = 0.0):
    def work(job: Job) -> dict:
        for i in range(steps):
            threading.Event().wait(pause_s)
            job.report((i + 1) / steps, f"step {i + 1}", step=i + 1, value=i * i)
        return {"total": sum(i * i for i in range(steps))}

    return work


def test_job_poll_and_stream(client, app):
    jobs = app.state.explorer.jobs
    job = jobs.start("squares", _stepper(4, pause_s=0.02))
    events = []

    def read_stream():
        with client.stream("GET", f"/api/jobs/{job.id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))

    reader = threading.Thread(target=read_stream, daemon=True)  # joined with a timeout: a hang fails
    reader.start()
    reader.join(timeout=WAIT_S)
    assert not reader.is_alive(), f"the event stream did not end within {WAIT_S} s"
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "done" and events[-1]["result"] == {"total": 14}
    polled = client.get(f"/api/jobs/{job.id}", params={"since": 2}).json()
    assert polled["status"] == "done" and polled["progress"] == 1.0
    assert [e["value"] for e in polled["events"]] == [4, 9] and polled["n_events"] == 4
    assert client.get(f"/api/jobs/{'0' * 32}").status_code == 404


def test_job_cancel(client, app):
    job = app.state.explorer.jobs.start("slow", _stepper(100, pause_s=0.02))  # 2 s if never cancelled
    _wait_until(lambda: job.snapshot()["n_events"] >= 1, "the job did not report a step")
    r = client.delete(f"/api/jobs/{job.id}")
    assert r.status_code == 200
    _wait_until(lambda: job.snapshot()["status"] != "running", "the cancelled job did not stop")
    snap = client.get(f"/api/jobs/{job.id}").json()
    assert snap["status"] == "cancelled" and snap["n_events"] < 100 and snap["result"] is None
    assert client.delete(f"/api/jobs/{'1' * 32}").status_code == 404


def test_failed_job_reports_its_error():
    queue = WorkQueue(workers=1, capacity=2)
    manager = JobManager(queue, max_jobs=2)

    def broken(job: Job):
        job.report(0.5, "half way")
        raise ValueError("bad input, try another class")

    job = manager.start("broken", broken)
    queue.shutdown()
    snap = job.snapshot()
    assert snap["status"] == "failed" and snap["error"] == "bad input, try another class" and snap["n_events"] == 1


def test_job_cancelled_before_it_starts_never_runs():
    queue = WorkQueue(workers=1, capacity=3)
    gate = threading.Event()
    queue.submit(gate.wait, 5)
    ran = []
    manager = JobManager(queue)
    job = manager.start("later", lambda j: ran.append(1))
    job.cancel()
    gate.set()
    queue.shutdown()
    assert job.status == "cancelled" and ran == []
    with pytest.raises(JobCancelled):
        job.report(1.0)


def test_job_table_forgets_oldest_finished_jobs():
    queue = WorkQueue(workers=1, capacity=4)
    manager = JobManager(queue, max_jobs=2)
    ids = []
    for _ in range(4):
        job = manager.start("noop", lambda j: None)
        queue.submit(lambda: None).result(timeout=5)  # the queue is FIFO with one worker: the job is finished
        ids.append(job.id)
    assert [manager.get(i) is not None for i in ids] == [False, False, True, True]
    queue.shutdown()


# -- queue and cache units ------------------------------------------------------------------


def test_work_queue_bounds_and_retry_after():
    queue = WorkQueue(workers=1, capacity=2)
    assert queue.submit(lambda: 21 * 2).result(timeout=5) == 42
    gate = threading.Event()
    held = [queue.submit(gate.wait, 5) for _ in range(2)]
    with pytest.raises(QueueFull) as err:
        queue.submit(lambda: None)
    # one finished task of ~0 s: mean time x 2 in flight / 1 worker rounds up to the 1 s floor
    assert err.value.retry_after == 1 and queue.stats()["rejected"] == 1
    gate.set()
    assert all(h.result(timeout=5) for h in held)
    assert queue.stats()["in_flight"] == 0
    queue.shutdown()
    with pytest.raises(ValueError):
        WorkQueue(workers=2, capacity=1)


def test_lru_cache_evicts_least_recently_used_by_count_and_bytes():
    cache: LRUCache[bytes] = LRUCache(max_items=3, max_bytes=10, sizeof=len)
    cache.put("a", b"1111")
    cache.put("b", b"2222")
    assert cache.get("a") == b"1111"  # a is now the most recent
    cache.put("c", b"33")  # 10 bytes: fits exactly
    assert len(cache) == 3 and cache.nbytes == 10
    cache.put("d", b"4")  # 4 items > 3: evicts b (least recent)
    assert [k in cache for k in "abcd"] == [True, False, True, True] and cache.nbytes == 7
    cache.put("e", b"55555")  # 4 + 2 + 1 + 5 = 12 bytes > 10: evicts a
    assert [k in cache for k in "acde"] == [False, True, True, True] and cache.nbytes == 8
    cache.put("huge", b"x" * 11)  # larger than the whole budget: not stored
    assert "huge" not in cache and cache.nbytes == 8
    cache.put("c", b"333333")  # replacing c: 1 + 5 + 6 = 12 bytes: evicts d (1), then e (5)
    assert [k in cache for k in "cde"] == [True, False, False] and cache.nbytes == 6
    assert cache.get("c") == b"333333"
    stats = cache.stats()
    assert stats["hits"] == 2 and stats["misses"] == 0 and stats["items"] == 1
    assert cache.get("nope") is None and cache.stats()["misses"] == 1


def test_key_of_depends_on_every_part():
    base = key_of("explain", "abc", ["gae"], "zebra", None, "logit", 0)
    assert len(base) == 64
    assert base == key_of("explain", "abc", ["gae"], "zebra", None, "logit", 0)
    assert base != key_of("explain", "abc", ["gae"], "zebra", None, "logit", 1)
    assert base != key_of("explain", "abd", ["gae"], "zebra", None, "logit", 0)


# -- the command ------------------------------------------------------------------------------


def test_serve_command_binds_loopback_by_default(monkeypatch, tiny_explainer):
    import uvicorn
    from click.testing import CliRunner

    import attngrad.models
    from attngrad.cli import main

    calls = []
    monkeypatch.setattr(attngrad.models, "load_model", lambda *a, **k: tiny_explainer.adapter)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    result = CliRunner().invoke(main, ["serve", "--port", "8123", "--max-upload-mb", "1"])
    assert result.exit_code == 0, result.output
    app, kw = calls[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123
    assert app.state.explorer.settings.max_upload_bytes == 2**20
    assert "warning" not in result.output and app.state.explorer.text_model is None
    result = CliRunner().invoke(main, ["serve", "--text-model", "/models/my-bert"])
    assert result.exit_code == 0 and calls[1][0].state.explorer.text_model == "/models/my-bert"
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0 and "warning: binding to 0.0.0.0" in result.output
