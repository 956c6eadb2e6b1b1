"""Every bad input of the core issue gets a one-line AttngradError; odd image modes just work."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attngrad import AttngradError, load_image


def _rgb(size=(40, 30)):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty"),
        (lambda p: (p.write_text("hello, not a jpeg"), p)[1], "not an image"),
    ],
)
def test_bad_files(tmp_path, make, message):
    path = make(tmp_path / "x.jpg")
    with pytest.raises(AttngradError, match=message) as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_truncated(tmp_path):
    path = tmp_path / "t.jpg"
    _rgb((200, 200)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AttngradError, match="damaged or truncated"):
        load_image(path)


def test_huge(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(path)
    with pytest.raises(AttngradError, match="over the limit"):
        load_image(path, max_pixels=1_000_000)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_modes_become_rgb(tmp_path, mode):
    img = _rgb()
    if mode == "I;16":
        arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
    else:
        img = img.convert(mode)
    ext = "jpg" if mode == "CMYK" else ("tif" if mode == "I;16" else "png")
    path = tmp_path / f"img.{ext}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode == "I;16":  # 16-bit scaled to 8-bit, not clipped to white
        ref = np.asarray(_rgb().convert("L"), dtype=np.int32)
        assert np.abs(np.asarray(out)[..., 0].astype(np.int32) - ref).max() <= 1


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    out = load_image(img)
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_bytes_are_decoded_with_the_same_checks(tmp_path):
    path = tmp_path / "a.png"
    _rgb().save(path)
    assert load_image(path.read_bytes()).size == (40, 30)
    with pytest.raises(AttngradError, match="^upload 'x.jpg': not an image"):
        load_image(b"hello", name="upload 'x.jpg'")
    with pytest.raises(AttngradError, match="^image bytes: the file is empty"):
        load_image(b"")


# ---------------------------------------------------------------------- shipped samples by short name


def test_short_names_open_the_shipped_samples(tmp_path, monkeypatch):
    from attngrad.io import find_sample, sample_names, samples_folder

    monkeypatch.chdir(tmp_path)  # an empty folder: no el1.jpg here
    folder = samples_folder()
    for name, file in [("el1", "el1.jpg"), ("el1.jpg", "el1.jpg"), ("catdog", "catdog.png"), ("tusker.jpg", "n01871265_tusker.jpg"),
                       ("African elephant", "n02504458_African_elephant.jpg"), ("african_elephant", "n02504458_African_elephant.jpg"),
                       ("n02391049_zebra.jpg", "n02391049_zebra.jpg"), ("SNAIL", "n01944390_snail.jpg")]:  # fmt: skip
        assert find_sample(name) == folder / file, name
    expected = np.asarray(Image.open(folder / "n01871265_tusker.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(load_image("tusker")), expected)
    assert {"el1", "catdog", "snail", "tusker", "zebra"} <= set(sample_names())
    for name in ("photos/el1.jpg", "no_such_thing", "", "el1.txt"):
        assert find_sample(name) is None, name
    with pytest.raises(AttngradError, match="shipped samples by short name: .*el1"):
        load_image("photos/el1.jpg")


def test_a_real_file_wins_over_a_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _rgb((20, 10)).save(tmp_path / "el1.jpg")
    assert load_image("el1.jpg").size == (20, 10)
    assert load_image("el1").size != (20, 10)  # no file called 'el1' here: the sample


def test_every_command_reads_the_same_image_suffixes():
    """One list of image suffixes: a .tif data set is read alike by evaluate perturbation, attribution-error, the
    gallery and the image arguments (attribution-error once kept a shorter list of its own)."""
    from attngrad import gallery, io
    from attngrad.cli import attribution_error
    from attngrad.evaluation import data

    assert data.IMAGE_SUFFIXES is io.IMAGE_SUFFIXES and attribution_error.IMAGE_SUFFIXES is io.IMAGE_SUFFIXES
    assert gallery.IMAGE_SUFFIXES is io.IMAGE_SUFFIXES and {".tif", ".gif", ".ppm"} <= set(io.IMAGE_SUFFIXES)
