"""``load_vlm`` reads Qwen2-VL's pixel counts as the one square size it is explained at."""

from __future__ import annotations

import json

import pytest

from attngrad.errors import AttngradError
from attngrad.vlm.load import load_vlm

from .conftest import TEMPLATE, tiny_llava, tiny_qwen2vl, word_tokenizer


def _save(model, root, processor=None):
    model.config.attngrad_template = TEMPLATE
    model.save_pretrained(root)
    word_tokenizer().save_pretrained(root)
    if processor is not None:
        (root / "preprocessor_config.json").write_text(json.dumps(processor))
    return root


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
