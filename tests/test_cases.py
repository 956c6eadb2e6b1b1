"""The demo's multi-class cases: shipped images, and the extra folder's images by io's suffixes."""

from __future__ import annotations

from attngrad import io
from attngrad.cases import CASES, asset_image, extra_multiclass_images


def test_shipped_cases_are_in_the_samples_folder():
    for name in CASES:
        assert asset_image(name) == io.samples_folder() / name and asset_image(name).is_file()


def test_extra_images_use_the_same_suffixes_as_io(tmp_path):
    for suffix in io.IMAGE_SUFFIXES:
        (tmp_path / f"a{suffix.upper()}").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    (tmp_path / "el1.jpg").write_bytes(b"")  # already a shipped case
    found = extra_multiclass_images(tmp_path)
    assert sorted(p.suffix.lower() for p in found) == sorted(io.IMAGE_SUFFIXES)  # .tif / .tiff as well
