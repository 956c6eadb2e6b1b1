"""Where galleries come from: argument, $ATTNGRAD_GALLERY, ../shared beside the clone, shipped images."""

from __future__ import annotations

from pathlib import Path

import pytest

from attngrad import AttngradError, gallery
from attngrad.experiments.detail import detail_interpretation

from .conftest import REPO, SHARED


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "n00000001_zebra.jpg").write_bytes(b"")
    return folder


def test_order_argument_then_environment_then_clone_then_shipped(tmp_path, monkeypatch):
    given, env = _folder(tmp_path, "given"), _folder(tmp_path, "env")
    monkeypatch.setenv("ATTNGRAD_GALLERY", str(env))
    assert gallery.resolve_gallery(given) == given
    assert gallery.resolve_gallery(None) == env
    monkeypatch.delenv("ATTNGRAD_GALLERY")
    beside = SHARED / "data" / "imagenet-sample"
    assert gallery.resolve_gallery(None) == (beside if beside.is_dir() else gallery.shipped_images())
    monkeypatch.setattr(gallery, "shared_data", lambda: None)  # a clone without ../shared
    assert gallery.resolve_gallery(None) == gallery.shipped_images()
    assert gallery.gallery_index()["tusker"].name == "n01871265_tusker.jpg"


def test_the_clone_is_found_from_the_package_location():
    assert gallery.repository_root() == REPO
    assert gallery.shared_data() == (SHARED / "data" if (SHARED / "data").is_dir() else None)


def test_a_missing_gallery_is_an_error_never_a_fallback(tmp_path, monkeypatch, tiny_explainer, tiny_pixels):
    missing = tmp_path / "missing"
    with pytest.raises(AttngradError, match="gallery folder not found"):
        gallery.class_image("zebra", ["zebra"], missing)
    with pytest.raises(AttngradError, match="gallery folder not found"):
        detail_interpretation(tiny_explainer, tiny_pixels[:1], k=2, gallery=missing)
    monkeypatch.setenv("ATTNGRAD_GALLERY", str(missing))
    with pytest.raises(AttngradError, match="ATTNGRAD_GALLERY=.*no such folder"):
        gallery.class_image("zebra", ["zebra"])


def test_no_machine_path_in_the_package():
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "src").rglob("*")
        if p.is_file() and p.suffix in {".py", ".js", ".html", ".txt", ".json", ".toml", ".md"}
        and "/work/" in p.read_text(errors="ignore")
    ]
    assert offenders == []


def test_report_with_a_missing_gallery_writes_nothing(tmp_path, tiny_explainer):
    from attngrad.experiments.report import build_report

    with pytest.raises(AttngradError, match="gallery folder not found"):
        build_report(tiny_explainer, tmp_path / "out", tmp_path / "missing", progress=False)
    assert not (tmp_path / "out").exists()
