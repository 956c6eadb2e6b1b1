"""The converted SmolLM2 copy in the cache: made once, made again when an older attngrad made it, and never
left half-replaced. The conversion itself is faked here (a file per call); test_smollm2.py runs the real one."""

from __future__ import annotations

import json
import sys
import types

import pytest

from attngrad.lm import model as lm_model


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A cache folder under tmp_path and a conversion that writes ``config.json`` and counts its calls."""
    monkeypatch.setenv("ATTNGRAD_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gguf", types.ModuleType("gguf"))
    monkeypatch.setattr(lm_model, "_gguf_file", lambda: tmp_path / "model.gguf")
    calls = []

    def convert(gguf, out):
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / "new").write_text("")

    monkeypatch.setattr(lm_model, "_convert", convert)
    return types.SimpleNamespace(folder=tmp_path / lm_model.DEFAULT_NAME, calls=calls, root=tmp_path)


def _old_copy(folder, stamp=None):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "old").write_text("")
    if stamp is not None:
        (folder / lm_model._STAMP).write_text(json.dumps(stamp))


def test_a_fresh_cache_is_converted_once_and_stamped(fake):
    assert lm_model.default_model(quiet=True) == fake.folder
    assert lm_model.default_model(quiet=True) == fake.folder
    assert len(fake.calls) == 1
    assert json.loads((fake.folder / lm_model._STAMP).read_text()) == {"conversion": lm_model.CONVERSION}
    assert sorted(p.name for p in fake.root.iterdir()) == [lm_model.DEFAULT_NAME]  # no temporary folder left


@pytest.mark.parametrize("stamp", [None, {"conversion": lm_model.CONVERSION - 1}, {"conversion": "2"}])
def test_a_copy_from_an_older_conversion_is_replaced(fake, stamp, capsys):
    _old_copy(fake.folder, stamp)
    assert lm_model.default_model() == fake.folder
    assert len(fake.calls) == 1
    assert (fake.folder / "new").exists() and not (fake.folder / "old").exists()
    assert sorted(p.name for p in fake.root.iterdir()) == [lm_model.DEFAULT_NAME]
    assert "older attngrad" in capsys.readouterr().err


def test_a_current_copy_is_kept(fake):
    _old_copy(fake.folder, {"conversion": lm_model.CONVERSION})
    lm_model.default_model(quiet=True)
    assert not fake.calls and (fake.folder / "old").exists()


def test_a_failed_conversion_keeps_the_old_copy(fake, monkeypatch):
    _old_copy(fake.folder)

    def broken(gguf, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(lm_model, "_convert", broken)
    with pytest.raises(KeyboardInterrupt):
        lm_model.default_model(quiet=True)
    assert (fake.folder / "old").exists()
    assert sorted(p.name for p in fake.root.iterdir()) == [lm_model.DEFAULT_NAME]
