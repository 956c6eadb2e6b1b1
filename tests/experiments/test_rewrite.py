"""Class rewriting: quality measures, the L-inf bound in 8-bit space, the PNG round trip, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from attngrad import AttngradError, load_image
from attngrad.demo import asset_image
from attngrad.experiments.rewrite import (
    batch_summary,
    psnr,
    random_targets,
    rewrite,
    rewrite_batch,
    save_rewrite,
    ssim,
)


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004, per channel, written with numpy windows: Gaussian weights (11 x 11, sigma 1.5),
    statistics at every window position fully inside the image, mean over positions and channels."""
    c1, c2 = 0.01**2, 0.03**2
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    values = []
    for ch in range(x.shape[0]):
        wa = np.lib.stride_tricks.sliding_window_view(x[ch], (11, 11))  # (H-10, W-10, 11, 11)
        wb = np.lib.stride_tricks.sliding_window_view(y[ch], (11, 11))
        mu_a, mu_b = (wa * w).sum(axis=(-2, -1)), (wb * w).sum(axis=(-2, -1))
        var_a = (w * (wa - mu_a[..., None, None]) ** 2).sum(axis=(-2, -1))
        var_b = (w * (wb - mu_b[..., None, None]) ** 2).sum(axis=(-2, -1))
        cov = (w * (wa - mu_a[..., None, None]) * (wb - mu_b[..., None, None])).sum(axis=(-2, -1))
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        values.append(s.mean())
    return float(np.mean(values))


def test_ssim_and_psnr_against_independent_formulas():
    rng = np.random.default_rng(0)
    x = rng.random((3, 40, 36))
    y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
    tx, ty = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    assert float(ssim(tx, ty)[0]) == pytest.approx(reference_ssim(x, y), abs=1e-10)
    assert float(ssim(tx, tx)[0]) == pytest.approx(1.0, abs=1e-12)
    mse = ((x - y) ** 2).mean()
    assert float(psnr(tx, ty)[0]) == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)
    assert math.isinf(float(psnr(tx, tx)[0]))


def test_rewrite_stays_in_budget_and_on_the_8bit_grid(tiny_explainer, tmp_path):
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    logits = tiny_explainer.adapter.forward(tiny_explainer.prepare(image)[0]).logits[0]
    to = int(logits.argsort()[-2])  # the runner-up: reachable on the random model
    seen = []
    res = rewrite(tiny_explainer, image, to, eps=8 / 255, steps=60, probability=0.215,
                  on_step=lambda step, numbers: seen.append((step, numbers)))
    assert [s for s, _ in seen] == list(range(res.steps + 1))  # one report per forward pass
    assert seen[-1][1]["done"] == 1 and seen[-1][1]["to_probability"] >= 0.215 > seen[0][1]["to_probability"]
    a0 = np.asarray(image, dtype=np.int64)
    a1 = np.asarray(res.rewritten, dtype=np.int64)
    assert np.abs(a1 - a0).max() == res.linf <= 8
    assert res.success and res.after[0].index == to and res.after[0].probability >= 0.215
    assert res.steps >= res.linf  # one 8-bit level per step at most
    assert res.psnr == pytest.approx(10 * math.log10(255**2 / ((a1 - a0) ** 2).mean()), rel=1e-9)
    assert res.l2 == pytest.approx(np.sqrt((((a1 - a0) / 255.0) ** 2).sum()), rel=1e-9)
    # the round trip: the saved PNG, reloaded, is the same picture and the same class
    paths = save_rewrite(tiny_explainer, res, tmp_path, "r")
    reloaded = load_image(paths["png"])
    assert np.array_equal(np.asarray(reloaded), np.asarray(res.rewritten))
    assert tiny_explainer.predict(reloaded, k=1)[0][0].index == to
    assert {"png", "difference", "json", "before_after"} <= set(paths)


def test_rewrite_batch_stops_each_image_separately(tiny_explainer):
    images = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    preds = [p[0].index for p in tiny_explainer.predict(images, k=1)]
    targets = [(p + 1) % 5 for p in preds]
    results = rewrite_batch(tiny_explainer, images, targets, eps=8 / 255, steps=40, probability=0.21)
    assert [r.to_class for r in results] == [tiny_explainer.labels[t] for t in targets]
    for r in results:
        assert r.linf <= 8 and r.steps <= 40
    summary = batch_summary(results)
    assert summary["images"] == 2
    assert summary["success_rate"] == sum(r.success for r in results) / 2


def test_random_targets_avoid_the_prediction_and_follow_the_seed(tiny_explainer):
    images = [Image.new("RGB", (32, 32), (40 * i, 255 - 40 * i, 0)) for i in range(6)]
    preds = [p[0].index for p in tiny_explainer.predict(images, k=1)]
    first = random_targets(tiny_explainer, images, np.random.default_rng(7))
    assert first == random_targets(tiny_explainer, images, np.random.default_rng(7))
    assert all(t != p and 0 <= t < 5 for t, p in zip(first, preds))


def test_rewrite_bad_inputs(tiny_explainer):
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    pred = tiny_explainer.predict(image, k=1)[0][0].index
    other = (pred + 1) % 5
    with pytest.raises(AttngradError, match="eps must be > 0"):
        rewrite(tiny_explainer, image, other, eps=0)
    with pytest.raises(AttngradError, match="eps must be > 0"):
        rewrite(tiny_explainer, image, other, eps=-1 / 255)
    with pytest.raises(AttngradError, match="below one 8-bit level"):
        rewrite(tiny_explainer, image, other, eps=0.5 / 255)
    with pytest.raises(AttngradError, match="already classified"):
        rewrite(tiny_explainer, image, pred)
    with pytest.raises(AttngradError, match="unknown class"):
        rewrite(tiny_explainer, image, "platypus")
    with pytest.raises(AttngradError, match="probability"):
        rewrite(tiny_explainer, image, other, probability=1.5)


@pytest.mark.slow
def test_tusker_becomes_bull_mastiff_within_2_levels(vit_ti, tmp_path):
    """The measured bar: p >= 0.90, L-inf <= 2/255, PSNR >= 40 dB, surviving the PNG round trip."""
    res = rewrite(vit_ti, asset_image("n01871265_tusker.jpg"), "bull mastiff", eps=2 / 255)
    assert res.before[0].label == "tusker"
    assert res.success and res.after[0].label == "bull mastiff" and res.after[0].probability >= 0.90
    assert res.linf <= 2 and res.psnr >= 40 and res.ssim > 0.95
    path = tmp_path / "tusker_to_bull_mastiff.png"
    res.rewritten.save(path)
    original = vit_ti.adapter.preprocessor.geometry(load_image(asset_image("n01871265_tusker.jpg")))
    reloaded = load_image(path)
    assert np.abs(np.asarray(reloaded, dtype=int) - np.asarray(original, dtype=int)).max() <= 2
    top = vit_ti.predict(path, k=1)[0][0]
    assert top.label == "bull mastiff" and top.probability >= 0.90
