"""The Hugging Face adapter: maps, overrides, special tokens, errors, loading."""

from __future__ import annotations

import pytest
import torch

from attngrad import AttngradError, Explainer
from attngrad.models import HFAdapter, load_model

from ..conftest import tiny_vit_config


def test_forward_returns_every_layer_in_graph(tiny_explainer, tiny_pixels):
    out = tiny_explainer.adapter.forward(tiny_pixels.requires_grad_(False).clone().requires_grad_(True))
    assert len(out.attentions) == 3
    assert out.attentions[0].shape == (3, 2, 17, 17)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(3, 2, 17))
    assert all(a.requires_grad for a in out.attentions)


def test_override_reproduces_logits_exactly_and_changes_them_otherwise(tiny_explainer, tiny_pixels):
    adapter = tiny_explainer.adapter
    with torch.no_grad():
        base = adapter.forward(tiny_pixels)
        with adapter.override_attention([a.clone() for a in base.attentions]):
            same = adapter.forward(tiny_pixels)
        uniform = [torch.full_like(a, 1.0 / a.shape[-1]) for a in base.attentions]
        with adapter.override_attention(uniform):
            changed = adapter.forward(tiny_pixels)
        after = adapter.forward(tiny_pixels)
    assert torch.equal(base.logits, same.logits)
    assert not torch.allclose(base.logits, changed.logits)
    assert torch.equal(changed.attentions[1], uniform[1])
    assert torch.equal(base.logits, after.logits)  # the override removed itself


def test_deit_plain_classifier_also_has_the_distillation_token():
    from transformers import DeiTConfig, DeiTForImageClassification

    cfg = DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     image_size=32, patch_size=8, num_labels=4)
    ex = Explainer(DeiTForImageClassification(cfg).eval())
    assert ex.explain(torch.randn(1, 3, 32, 32), method="gae").maps.shape == (1, 4, 4)


def test_deit_distilled_has_two_special_tokens():
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    torch.manual_seed(0)
    cfg = DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     image_size=32, patch_size=8, num_labels=4)
    ex = Explainer(DeiTForImageClassificationWithTeacher(cfg).eval())
    assert ex.adapter.special_tokens == {"cls": 0, "distillation": 1}
    x = torch.randn(2, 3, 32, 32)
    cls_map = ex.explain(x, method="complete").maps
    dist_map = ex.explain(x, method="complete", token="distillation").maps
    assert cls_map.shape == dist_map.shape == (2, 4, 4)  # 18 tokens - 2 special = 16 patches
    assert not torch.allclose(cls_map, dist_map)
    with pytest.raises(AttngradError, match="unknown token"):
        ex.explain(x, token="register")


def test_model_without_attention_maps_is_refused():
    from transformers import ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(ResNetConfig(num_labels=3, hidden_sizes=[8, 8, 8, 8], embedding_size=8)).eval()
    with pytest.raises(AttngradError, match="attention"):
        Explainer(model).explain(torch.randn(1, 3, 32, 32))


def test_local_folder_round_trip_and_bad_folders(tmp_path, tiny_vit):
    tiny_vit.save_pretrained(tmp_path / "m")
    adapter = load_model(tmp_path / "m")
    assert isinstance(adapter, HFAdapter) and adapter.labels[2] == "zebra"
    (tmp_path / "empty").mkdir()
    with pytest.raises(AttngradError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    tiny_vit_config().to_json_file(tmp_path / "noweights" / "config.json")
    with pytest.raises(AttngradError, match="no weights"):
        load_model(tmp_path / "noweights")


def test_device_parameter(tiny_vit):
    ex = Explainer(tiny_vit, device="cpu")
    assert ex.device.type == "cpu"


def test_beit_with_relative_position_bias_works():
    from transformers import BeitConfig, BeitForImageClassification

    torch.manual_seed(0)
    cfg = BeitConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     image_size=32, patch_size=8, num_labels=4, use_relative_position_bias=True)
    ex = Explainer(BeitForImageClassification(cfg).eval())
    x = torch.randn(2, 3, 32, 32)
    assert ex.explain(x, method="complete").maps.shape == (2, 4, 4)
    with torch.no_grad():
        base = ex.adapter.forward(x)
        with ex.adapter.override_attention([a.clone() for a in base.attentions]):
            assert torch.equal(ex.adapter.forward(x).logits, base.logits)
