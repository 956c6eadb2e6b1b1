"""``load_vlm`` reads the image preprocessor as transformers does, from a folder and from the Hub (cache), and
Qwen2-VL's pixel counts as the one square size it is explained at."""

from __future__ import annotations

import json

import pytest

from attngrad.errors import AttngradError
from attngrad.vlm.load import load_vlm

from .conftest import TEMPLATE, tiny_llava, tiny_qwen2vl, word_tokenizer

PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 16, "width": 16},
             "image_mean": [0.1] * 3, "image_std": [0.2] * 3, "resample": 2}


def _save(model, root, processor=None):
    model.config.attngrad_template = TEMPLATE
    model.save_pretrained(root)
    word_tokenizer().save_pretrained(root)
    if processor is not None:
        (root / "preprocessor_config.json").write_text(json.dumps(processor))
    return root


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub cache holding ``org/tiny-llava`` (as a download leaves it), read offline."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--org--tiny-llava"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    _save(tiny_llava("vit"), snapshot, PROCESSOR)
    return cache


def test_a_hub_name_loads_its_image_preprocessor(hub, monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "org/tiny-llava" is no folder here
    _, from_hub = load_vlm("org/tiny-llava")
    _, from_folder = load_vlm(hub / "models--org--tiny-llava" / "snapshots" / ("a" * 40))
    assert from_hub is not None and from_hub == from_folder
    assert from_hub.resize == (16, 16) and from_hub.mean == (0.1, 0.1, 0.1) and from_hub.resample == 2


def test_a_folder_without_a_processor_config_has_none(tmp_path):
    assert load_vlm(_save(tiny_llava("vit"), tmp_path / "plain"))[1] is None


def test_qwen2vl_pixel_counts_become_its_square_size(tmp_path):
    model = tiny_qwen2vl()  # explained at 16 px (attngrad_image_size)
    adapter, pre = load_vlm(_save(model, tmp_path / "none"))  # no processor config: Qwen2VLImageProcessor's defaults
    assert adapter.image_size == 16 and pre is not None and pre.resize == (16, 16) and pre.resample == 3
    counts = {"image_processor_type": "Qwen2VLImageProcessor", "size": {"shortest_edge": 256, "longest_edge": 256},
              "patch_size": 2, "merge_size": 2, "temporal_patch_size": 2, "image_mean": [0.3] * 3}
    _, pre = load_vlm(_save(model, tmp_path / "counts", counts))
    assert pre is not None and pre.resize == (16, 16) and pre.shortest_edge is None and pre.mean == (0.3, 0.3, 0.3)
    with pytest.raises(AttngradError, match="outside the 1024 to 4096 pixels"):
        load_vlm(_save(model, tmp_path / "small", dict(counts, size={"shortest_edge": 1024, "longest_edge": 4096})))
