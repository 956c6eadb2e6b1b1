"""External guidance: stitching geometry, crop-back on the patch grid, guide resolution, guided explain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attngrad import AttngradError
from attngrad.experiments.guidance import (
    Region,
    class_image,
    crop_image,
    crop_region,
    resolve_guide,
    stitch,
)
from attngrad.models import Preprocessor

RED, BLUE = (255, 0, 0), (0, 0, 255)


def solid(colour, size):
    return Image.new("RGB", size, colour)


@pytest.mark.parametrize(
    "layout, first_box, second_box",
    [
        ("left-right", (0, 0, 30, 40), (30, 0, 60, 40)),
        ("right-left", (30, 0, 60, 40), (0, 0, 30, 40)),
        ("top-bottom", (0, 0, 60, 20), (0, 20, 60, 40)),
        ("bottom-top", (0, 20, 60, 40), (0, 0, 60, 20)),
    ],
)
def test_stitch_puts_each_image_in_its_half(layout, first_box, second_box):
    canvas, region = stitch(solid(RED, (60, 40)), solid(BLUE, (17, 90)), layout)
    assert canvas.size == (60, 40)  # the original's own size
    a = np.asarray(canvas)
    x0, y0, x1, y1 = first_box
    assert (a[y0:y1, x0:x1] == RED).all()
    x0, y0, x1, y1 = second_box
    assert (a[y0:y1, x0:x1] == BLUE).all()
    # the region, on a pixel grid, is exactly the original's box
    r0, r1, c0, c1 = region.cells(40, 60)
    assert (c0, r0, c1, r1) == first_box
    assert (np.asarray(crop_image(canvas, region)) == RED).all()


def test_stitch_odd_width_rounds_canvas_down_to_even():
    canvas, _ = stitch(solid(RED, (61, 20)), solid(BLUE, (5, 5)))
    assert canvas.size == (60, 20)


def test_region_cells_on_even_and_odd_grids():
    assert Region.of("left-right").cells(14, 14) == (0, 14, 0, 7)
    assert Region.of("right-left").cells(14, 14) == (0, 14, 7, 14)
    assert Region.of("top-bottom").cells(14, 14) == (0, 7, 0, 14)
    assert Region.of("bottom-top").cells(14, 14) == (7, 14, 0, 14)
    # odd grid: the middle column mixes both images and belongs to neither
    assert Region.of("left-right").cells(7, 7) == (0, 7, 0, 3)
    assert Region.of("right-left").cells(7, 7) == (0, 7, 4, 7)
    assert Region.of("left-right").complement().cells(14, 14) == (0, 14, 7, 14)


def test_crop_region_slices_tensors_and_arrays():
    maps = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)
    left = crop_region(maps, Region.of("left-right"))
    right = crop_region(maps, Region.of("right-left"))
    assert left.shape == (2, 4, 3) and right.shape == (2, 4, 3)
    for b in range(2):
        for i in range(4):
            for j in range(3):
                assert left[b, i, j] == maps[b, i, j]
                assert right[b, i, j] == maps[b, i, j + 3]
    assert np.array_equal(crop_region(maps.numpy(), Region.of("top-bottom")), maps.numpy()[:, :2, :])
    with pytest.raises(AttngradError):
        crop_region(torch.zeros(5), Region.of("left-right"))


@pytest.mark.parametrize(
    "pre",
    [
        Preprocessor(resize=(224, 224)),  # Hugging Face ViT: squash
        Preprocessor(resize=None, shortest_edge=256, crop=(224, 224), crop_rounding="round"),  # timm: resize + crop
    ],
)
def test_seam_lands_on_the_centre_patch_boundary_after_preprocessing(pre):
    """Whatever the model's (symmetric) preprocessing, patch columns 0..6 see the original, 7..13 the guide."""
    canvas, region = stitch(solid(RED, (300, 200)), solid(BLUE, (90, 70)))
    x = pre.to_unit([canvas])[0]  # (3, 224, 224) in [0, 1]
    assert x.shape == (3, 224, 224)
    red_share = (x[0] / (x[0] + x[2])).unfold(1, 16, 16).mean(dim=(0, 2))  # per patch column
    r0, r1, c0, c1 = region.cells(14, 14)
    assert (c0, c1) == (0, 7)
    assert (red_share[:7] > 0.9).all() and (red_share[7:] < 0.1).all()
    # away from the resampling filter's reach of the seam, the pixels are exactly the two colours
    assert torch.allclose(x[:, :, :100], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 224, 100))
    assert torch.allclose(x[:, :, 124:], torch.tensor([0, 0, 1.0]).view(3, 1, 1).expand(3, 224, 100))


def test_unknown_layout_and_tiny_image():
    with pytest.raises(AttngradError, match="layout"):
        stitch(solid(RED, (8, 8)), solid(BLUE, (8, 8)), "diagonal")
    with pytest.raises(AttngradError, match="too small"):
        stitch(solid(RED, (1, 8)), solid(BLUE, (8, 8)))


@pytest.fixture()
def gallery(tmp_path):
    solid(BLUE, (20, 20)).save(tmp_path / "n02391049_zebra.jpg")
    solid(RED, (20, 20)).save(tmp_path / "n02504458_African_elephant.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_guide_by_class_name_from_a_gallery(gallery):
    labels = ["cat", "dog", "zebra", "African elephant", "tench, Tinca tinca"]
    assert class_image("african elephant", labels, gallery) == gallery / "n02504458_African_elephant.jpg"
    image, where = resolve_guide("zebra", labels, gallery)
    assert where == str(gallery / "n02391049_zebra.jpg") and image.size == (20, 20)
    with pytest.raises(AttngradError, match="no image of class 'cat'"):
        resolve_guide("cat", labels, gallery)
    with pytest.raises(AttngradError, match="unknown class"):
        resolve_guide("zebrra", labels, gallery)
    with pytest.raises(AttngradError, match="no such file"):
        resolve_guide("missing/guide.jpg", labels, gallery)
    with pytest.raises(AttngradError, match="gallery folder not found"):
        resolve_guide("zebra", labels, gallery / "nope")


def test_explain_guided_equals_explaining_the_stitched_image(tiny_explainer):
    """The guided map is the stitched input's map, cropped; the class is the original's own prediction."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 0), (255, 255, 255), (0, 0, 255)]
    images = [solid(c, (32, 32)) for c in colours]
    classes = [int(tiny_explainer.adapter.forward(tiny_explainer.prepare(im)[0]).logits.argmax()) for im in images]
    original, own_class = images[0], classes[0]
    guide = images[next(i for i, c in enumerate(classes) if c != own_class)]
    res = tiny_explainer.explain(original, guide=guide, method="complete")
    canvas, _ = stitch(original, guide)
    direct = tiny_explainer.explain(canvas, target=own_class, method="complete")
    assert res.targets.tolist() == [own_class]
    assert res.maps.shape == (1, 4, 2) and res.full_maps.shape == (1, 4, 4)
    torch.testing.assert_close(res.full_maps, direct.maps)
    torch.testing.assert_close(res.maps, direct.maps[:, :, :2])
    right = tiny_explainer.explain_methods(original, ["complete", "gae"], guide=guide, layout="right-left")
    assert set(right) == {"complete", "gae"}
    torch.testing.assert_close(right["gae"].maps, right["gae"].full_maps[:, :, 2:])
    # a guide the model puts in the explained class is refused
    with pytest.raises(AttngradError, match="another class"):
        tiny_explainer.explain(original, guide=original)
    with pytest.raises(AttngradError, match="not a preprocessed tensor"):
        tiny_explainer.explain(torch.zeros(1, 3, 32, 32), guide=guide)


def test_explain_guided_checks_the_layout_and_loads_each_image_once(tiny_explainer, monkeypatch):
    """The layout is checked once, the originals loaded once, the stitched region built once."""
    from attngrad import stitch as module

    calls = {"check_layout": 0, "load_image": 0}

    def counted(name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(module, name, counted(name))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 0), (255, 255, 255), (0, 0, 255)]
    images = [solid(c, (32, 32)) for c in colours]
    classes = [int(tiny_explainer.adapter.forward(tiny_explainer.prepare(im)[0]).logits.argmax()) for im in images]
    guide = next((im for im, c in zip(images, classes) if c not in classes[:2]), None)  # of neither explained class
    if guide is None:
        pytest.skip("the tiny model puts these colours in too few classes")
    res = module.explain_guided(tiny_explainer, images[:2], guide, ["complete"], layout="top-bottom")
    assert calls == {"check_layout": 1, "load_image": 2}
    assert res["complete"].region == module.Region.of("top-bottom")
    canvas, _ = stitch(images[1], guide, "top-bottom")
    direct = tiny_explainer.explain(canvas, target=int(res["complete"].targets[1]), method="complete")
    torch.testing.assert_close(res["complete"].full_maps[1:], direct.maps)  # the same canvas as stitch()'s
