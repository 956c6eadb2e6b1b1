"""Display rules: S / max|S|, white at zero, red positive, blue negative, colour bar, PNG."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from attngrad import viz
from attngrad.methods import is_signed


def test_normalize_keeps_sign_and_range():
    s = viz.normalize(torch.tensor([[2.0, -4.0], [1.0, 0.0]]))
    assert s.min() == -1.0 and s.max() == 0.5
    assert np.all(viz.normalize(np.zeros((2, 2))) == 0)


def test_unsigned_maps_are_stretched_min_to_max():
    """Unsigned maps (gae, tis, vitcx, dix ...) carry a positive offset: (S - min) / (max - min), so
    the smallest value is white; signed maps keep S / max|S| (a constant signed map stays red)."""
    s = viz.normalize(np.array([[3.0, 5.0], [4.0, 3.0]]), signed=False)
    np.testing.assert_allclose(s, [[0.0, 1.0], [0.5, 0.0]])
    assert np.all(viz.normalize(np.full((2, 2), 7.0), signed=False) == 0)
    img = Image.new("RGB", (32, 32), (0, 0, 0))
    offset = np.array([[3.0, 5.0]])
    unsigned = np.asarray(viz.overlay(img, offset, alpha=1.0, signed=is_signed("tis")))[16, 1]
    signed = np.asarray(viz.overlay(img, offset, alpha=1.0, signed=is_signed("complete")))[16, 1]
    assert np.all(unsigned > 240)  # the minimum is white
    assert signed[0] > 240 and signed[2] < 200  # 3/5 of the way to red


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


def test_what_red_means_per_method():
    """Signed maps (complete): red supports, blue opposes; unsigned ones (gae, absolute, rollout): magnitude."""
    assert is_signed("complete") is True
    for name in ("gae", "absolute", "rollout", "raw_attention", "attn_gradcam", "random"):
        assert is_signed(name) is False, name
    assert is_signed("image") is None and viz.legend(is_signed("image")) == ""
    assert "supports" in viz.legend(is_signed("complete")) and "magnitude" in viz.legend(is_signed("gae"))


def test_captions_and_colour_bar_follow_the_method(tmp_path):
    img = Image.new("RGB", (32, 32))
    maps = [[np.eye(2), np.eye(2), np.eye(2)]]
    fig = viz.grid([img], maps, col_titles=["image", "complete", "gae", "absolute"], signs=[True, False, False])
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "complete", "gae", "absolute"]
    captions = [ax.get_xlabel() for ax in fig.axes[:4]]  # under each column
    assert captions[0] == ""
    assert "red: supports" in captions[1] and "blue: opposes" in captions[1]
    assert "magnitude" in captions[2] and "supports" not in captions[2] and "magnitude" in captions[3]
    label = fig.axes[-1].get_ylabel()  # the colour bar: both kinds
    assert "signed maps: S / max|S|" in label and "unsigned maps: (S - min) / (max - min), red = magnitude" in label
    only_unsigned = viz.grid([img], [[np.eye(2)]], col_titles=["image", "rollout"], signs=[False])
    label = only_unsigned.axes[-1].get_ylabel()
    assert "magnitude" in label and "opposes" not in label
    unknown = viz.grid([img], [[np.eye(2)]], col_titles=["image", "gae"])  # no sign given: no caption
    assert unknown.axes[1].get_xlabel() == ""
    path = viz.save_overlay(tmp_path / "o.png", img, np.eye(2), "gae: zebra", signed=False)
    assert path.exists()


def test_wrap_label_never_cuts():
    text = viz.wrap_label("American Staffordshire terrier")
    assert text.replace("\n", " ") == "American Staffordshire terrier" and "\n" in text
    assert viz.wrap_label("zebra") == "zebra"
