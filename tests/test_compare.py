"""The comparison grid (rows: classes, columns: methods), its page and the ``compare`` command."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from attngrad import viz
from attngrad.cli import main
from attngrad.compare import build_comparison_page, comparison_grid, red_means
from attngrad.errors import AttngradError


@pytest.fixture(scope="module")
def tiny_image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def test_grid_rows_are_classes_and_columns_methods(tiny_explainer, tiny_image):
    methods = ["complete", "tattr", "lrp"]
    fig = comparison_grid(tiny_explainer, tiny_image, ["zebra", "cat"], methods)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * (1 + len(methods))
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles == ["image", *(f"{m}\n({red_means(m)})" for m in methods)]
    assert red_means("complete") == "red supports, blue opposes" and red_means("tam") == "red = magnitude"
    assert fig.axes[0].get_ylabel() == "zebra" and fig.axes[4].get_ylabel() == "cat"
    # each cell is the method's own map under the shared display rules (viz.overlay)
    res = tiny_explainer.explain_methods([tiny_image], ["lrp"], target="cat")["lrp"]
    cell = fig.axes[4 + 3].images[0].get_array()
    expected = np.asarray(viz.overlay(res.images[0], res.maps[0]))
    assert np.array_equal(np.asarray(cell), expected)
    # an unsigned method's cell is min-max stretched (its own display rule), and the bar says so
    tattr = tiny_explainer.explain_methods([tiny_image], ["tattr"], target="cat")["tattr"]
    cell = np.asarray(fig.axes[4 + 2].images[0].get_array())
    assert np.array_equal(cell, np.asarray(viz.overlay(tattr.images[0], tattr.maps[0], signed=False)))
    assert not np.array_equal(cell, np.asarray(viz.overlay(tattr.images[0], tattr.maps[0])))
    assert "(S - min) / (max - min)" in fig.axes[-1].get_ylabel()
    plt.close(fig)


def test_grid_needs_a_target(tiny_explainer, tiny_image):
    with pytest.raises(AttngradError, match="target"):
        comparison_grid(tiny_explainer, tiny_image, [], ["tattr"])


@pytest.mark.slow
def test_comparison_page(vit_ti, tmp_path):
    page = build_comparison_page(vit_ti, tmp_path, methods=["complete", "tattr", "lrp"])
    text = page.read_text()
    for stem in ("el1", "catdog"):
        png = tmp_path / f"{stem}_compare.png"
        assert f"src='{png.name}'" in text
        with Image.open(png) as im:
            assert im.width > im.height > 100  # 2 rows x 4 columns
    assert "bull mastiff" in text and "African elephant" in text


@pytest.mark.slow
def test_compare_command(tmp_path):
    runner = CliRunner()
    args = ["compare", "el1", "--targets", "zebra,African elephant", "--methods",
            "tattr,partial_lrp,gae", "--out", str(tmp_path)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "el1_compare.png").is_file()
    bad = runner.invoke(main, [*args[:3], "zebraa", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown class 'zebraa'" in bad.output


def test_page_methods_default_to_the_papers_figure_13(tiny_explainer, tiny_image, monkeypatch, tmp_path):
    from attngrad import compare

    seen = {}

    def fake_grid(explainer, image, targets, methods, loss="logit"):
        seen[getattr(image, "name", None), tuple(targets)] = methods
        return viz.grid([tiny_image], [[torch.zeros(2, 2)]])

    monkeypatch.setattr(compare, "comparison_grid", fake_grid)
    monkeypatch.setattr(compare, "asset_image", lambda name: tiny_image)
    extra = tmp_path / "multiclass"
    extra.mkdir()
    tiny_image.save(extra / "dogbird.png")
    tiny_image.save(extra / "el1.jpg")  # a shipped case: not repeated
    (extra / "notes.txt").write_text("not an image")
    page = build_comparison_page(tiny_explainer, tmp_path / "out", multiclass=extra)
    paper = ["raw_attention", "rollout", "attn_gradcam", "partial_lrp", "lrp", "tattr", "tam", "bi", "tis", "vitcx",
             "gae", "absolute", "complete"]
    expected = [m for m in compare.PAPER_METHODS if m in compare.METHODS]
    assert set(paper) <= set(expected)
    assert seen == {(None, ("zebra", "African elephant")): expected, (None, ("bull mastiff", "tiger cat")): expected,
                    ("dogbird.png", ("top1", "top2")): expected}
    text = page.read_text()
    assert page.name == "compare.html" and "dogbird_compare.png" in text
    assert "<b>tam</b> (red = magnitude)" in text and "<b>complete</b> (red supports, blue opposes)" in text


def test_multiclass_folder_from_the_environment(monkeypatch, tmp_path):
    from attngrad.cases import extra_multiclass_images, multiclass_folder

    monkeypatch.setenv("ATTNGRAD_MULTICLASS", str(tmp_path))
    assert multiclass_folder() == tmp_path
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "catdog.png").write_bytes(b"")
    assert extra_multiclass_images() == [tmp_path / "a.jpg"]
