"""One "is this a model folder" check and one config-error wrapping (models/hf.py), used by every loader."""

from __future__ import annotations

import pytest

from attngrad.errors import AttngradError
from attngrad.models.hf import check_model_folder, load_config


def _loaders():
    from attngrad.clip import load_clip
    from attngrad.lm import LMExplainer
    from attngrad.models import load_model
    from attngrad.seq2seq import Seq2SeqExplainer
    from attngrad.text import TextExplainer

    return {
        "image": load_model,
        "text": TextExplainer.from_pretrained,
        "lm": LMExplainer.from_pretrained,
        "seq2seq": Seq2SeqExplainer.from_pretrained,
        "clip": load_clip,
    }


@pytest.fixture
def places(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty").mkdir()
    return {"file": tmp_path / "notes.txt", "empty": tmp_path / "empty", "missing": tmp_path / "missing"}


def test_check_model_folder(places, tmp_path):
    with pytest.raises(AttngradError, match="is a file, not a Hugging Face model folder"):
        check_model_folder(places["file"])
    with pytest.raises(AttngradError, match=r"not a Hugging Face model folder \(no config.json\)"):
        check_model_folder(places["empty"])
    with pytest.raises(AttngradError, match="no such model folder; copy it in"):
        check_model_folder(places["missing"], missing="copy it in")
    assert check_model_folder("owner/name") is None  # a Hub name: nothing to check here
    (places["empty"] / "config.json").write_text("{}")
    assert check_model_folder(places["empty"]) == places["empty"]


def test_load_config_error_is_one_line(places):
    (places["empty"] / "config.json").write_text("{not json")
    with pytest.raises(AttngradError, match=r"^cannot load text model '.*empty': .*; do this$") as err:
        load_config(places["empty"], what="text model", hint="do this")
    assert "\n" not in str(err.value)

    class Special(AttngradError):
        pass

    with pytest.raises(Special):
        load_config(places["empty"], error=Special)


@pytest.mark.parametrize("family", ["image", "text", "lm", "seq2seq", "clip"])
def test_every_loader_refuses_bad_folders_alike(places, family):
    load = _loaders()[family]
    for where, message in (("file", "is a file"), ("empty", "no config.json"), ("missing", "no such model folder")):
        with pytest.raises(AttngradError, match=message):
            load(str(places[where]))


def test_an_image_folder_without_its_classifier_is_refused_not_explained_with_a_random_head(tmp_path):
    """A ViTModel folder (no classification head) loads as ViTForImageClassification with a random classifier:
    the maps would explain noise with exit code 0. Refused in one line, from the API and the command line."""
    from click.testing import CliRunner
    from transformers import ViTModel

    from attngrad.cli import main
    from attngrad.models import load_model

    from ..conftest import tiny_vit_config

    ViTModel(tiny_vit_config()).save_pretrained(tmp_path / "backbone")
    with pytest.raises(AttngradError, match=r"weights of ViTForImageClassification are not in the folder \(classifier"):
        load_model(str(tmp_path / "backbone"))
    result = CliRunner().invoke(main, ["explain", "el1", "--model", str(tmp_path / "backbone"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "so they would be random; is it an image classifier" in result.stderr and not (tmp_path / "o").exists()
