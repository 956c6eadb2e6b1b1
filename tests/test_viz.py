"""Display rules: S / max|S|, white at zero, red positive, blue negative, colour bar, PNG."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from attngrad import viz


def test_normalize_keeps_sign_and_range():
    s = viz.normalize(torch.tensor([[2.0, -4.0], [1.0, 0.0]]))
    assert s.min() == -1.0 and s.max() == 0.5
    assert np.all(viz.normalize(np.zeros((2, 2))) == 0)


def test_colours():
    heat = viz.heatmap(np.array([[1.0, -1.0], [0.0, 0.0]]), (2, 2))
    red, blue, white = heat[0, 0], heat[0, 1], heat[1, 1]
    assert red[0] > 0.9 and red[2] < 0.1
    assert blue[2] > 0.9 and blue[0] < 0.1
    assert np.all(white > 0.95)


def test_overlay_and_grid_png(tmp_path):
    img = Image.new("RGB", (64, 48), (0, 0, 0))
    ov = viz.overlay(img, np.array([[1.0, -1.0]]), alpha=0.5)
    assert ov.size == (64, 48)
    left, right = np.asarray(ov)[24, 2], np.asarray(ov)[24, 61]
    assert left[0] > 100 and left[2] < 20 and right[2] > 100 and right[0] < 20
    fig = viz.grid([img, img], [[np.ones((2, 2)), None], [-np.ones((2, 2)), np.eye(2)]], col_titles=["a", "b", "c"])
    path = viz.save_figure(fig, tmp_path / "g.png")
    assert Image.open(path).size[0] > 300
