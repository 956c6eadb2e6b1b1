"""The model contract: neutral vs image adapters, the adapter registry, per-call overrides,
device checks and the loading errors a user can run into."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attngrad import AttngradError, Explainer
from attngrad.models import (
    ForwardOutput,
    HFAdapter,
    ImageAdapter,
    ModelAdapter,
    check_device,
    find_adapter,
    load_model,
    register_adapter,
    registered_adapters,
    wrap_model,
)
from attngrad.models import registry as registry_module

from ..conftest import tiny_vit_config


class _ToyAttention(nn.Module):
    """A one-layer 'Transformer' over (B, N, D) sequences: attention = softmax(x x^T)."""

    def forward(self, x):
        attn = torch.softmax(x @ x.transpose(1, 2), dim=-1).unsqueeze(1)  # (B, 1 head, N, N)
        out = (attn[:, 0] @ x).sum(dim=2)
        return torch.stack([out.sum(1), out[:, 0]], dim=1), attn


class _ToyAdapter(ModelAdapter):
    def __init__(self, model):
        self.model = model
        self.labels = ["a", "b"]
        self.special_tokens = {"cls": 0}
        self._param = nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def num_layers(self):
        return 1

    def forward(self, inputs):
        logits, attn = self.model(inputs)
        return ForwardOutput(logits, [attn])

    def override_attention(self, maps):
        raise NotImplementedError


@pytest.fixture
def clean_registry():
    saved = list(registry_module._ENTRIES)
    yield
    registry_module._ENTRIES[:] = saved


def test_a_new_family_is_one_registration(clean_registry):
    with pytest.raises(AttngradError, match="no adapter for _ToyAttention; supported families: timm, transformers"):
        wrap_model(_ToyAttention())
    register_adapter("toy", _ToyAdapter, classes=(_ToyAttention,))
    adapter = wrap_model(_ToyAttention())
    assert isinstance(adapter, _ToyAdapter) and not isinstance(adapter, ImageAdapter)
    x = torch.randn(2, 5, 3)
    trace = Explainer(adapter).trace(x, target=1)  # the neutral contract is enough for the shared pass
    assert trace.grid == (1, 4) and len(trace.gradients) == 1
    assert [e.name for e in registered_adapters()][-1] == "toy"


def test_registry_order_model_type_before_predicates(clean_registry, tiny_vit):
    assert find_adapter(tiny_vit).name == "transformers"
    register_adapter("vit-special", HFAdapter, model_types=("vit",))
    assert find_adapter(tiny_vit).name == "vit-special"
    register_adapter("by-name", HFAdapter, classes=("transformers.models.vit.modeling_vit.ViTForImageClassification",))
    assert find_adapter(tiny_vit).name == "vit-special"  # model type wins over class


def test_text_and_image_adapters_share_the_neutral_contract():
    from attngrad.text.model import TextAdapter

    assert issubclass(TextAdapter, ModelAdapter) and not issubclass(TextAdapter, ImageAdapter)
    assert issubclass(HFAdapter, ImageAdapter)


def test_num_layers(tiny_explainer):
    assert tiny_explainer.adapter.num_layers == 3


def test_two_overrides_do_not_share_state(tiny_vit):
    """Nested overrides on two explainers: each model uses its own maps (a module-level state would
    let the inner override replace the outer one's maps)."""
    from transformers import AttentionInterface, ViTForImageClassification

    torch.manual_seed(3)
    other = ViTForImageClassification(tiny_vit_config()).eval()
    a, b = Explainer(tiny_vit).adapter, Explainer(other).adapter
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        uniform = [torch.full_like(m, 1 / m.shape[-1]) for m in a.forward(x).attentions]
        own_b = [m.clone() for m in b.forward(x).attentions]
        with a.override_attention(uniform):
            want_a = a.forward(x).logits
        want_b = b.forward(x).logits
        before = set(AttentionInterface._global_mapping)
        with a.override_attention(uniform):
            with b.override_attention(own_b):
                got_b = b.forward(x).logits
                got_a = a.forward(x).logits
            again_a = a.forward(x).logits
    assert torch.equal(got_a, want_a) and torch.equal(again_a, want_a)
    assert torch.equal(got_b, want_b)
    assert not torch.allclose(want_a, a.forward(x).logits)  # the override did something
    assert set(AttentionInterface._global_mapping) == before  # each call removed its own function


@pytest.mark.parametrize("device,message", [
    ("banana", "unknown device 'banana'"),
    ("cuda:7", "cuda:7"),
    ("tpu", "not supported|unknown device"),
])
def test_bad_devices_are_clear_errors(device, message, tiny_vit):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(AttngradError, match=message):
        check_device(device)
    with pytest.raises(AttngradError, match=message):
        Explainer(tiny_vit, device=device)
    with pytest.raises(AttngradError, match=message):
        load_model(None, device=device)
    assert check_device("cpu") == torch.device("cpu")


def test_missing_local_folder_talks_about_folders(tmp_path):
    for name in ("./nope", str(tmp_path / "absent"), "../models/vit"):
        with pytest.raises(AttngradError, match="no such model folder"):
            load_model(name)


def test_checkpoint_is_only_for_timm(tiny_vit, tmp_path):
    tiny_vit.save_pretrained(tmp_path / "m")
    with pytest.raises(AttngradError, match="timm:NAME models only"):
        load_model(tmp_path / "m", checkpoint=tmp_path / "w.pth")




def test_timm_without_checkpoint_refuses_random_weights():
    pytest.importorskip("timm")
    with pytest.raises(AttngradError, match="pass --checkpoint FILE.*random weights"):
        load_model("timm:vit_tiny_patch16_224")


@pytest.mark.parametrize("content,suffix", [(b"not a checkpoint at all", ".pth"), (b"\x00\x01garbage", ".safetensors")])
def test_timm_checkpoint_that_is_not_a_checkpoint(tmp_path, content, suffix):
    pytest.importorskip("timm")
    bad = tmp_path / f"weights{suffix}"
    bad.write_bytes(content)
    with pytest.raises(AttngradError, match="not a readable checkpoint"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=bad)
    table = tmp_path / "list.pth"
    torch.save([1, 2, 3], table)
    with pytest.raises(AttngradError, match="not a checkpoint"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=table)
