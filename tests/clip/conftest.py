"""Tiny random CLIP models (float64) built from configs, with a tiny word-piece tokenizer."""

from __future__ import annotations

import pytest
import torch

WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "photo", "of", "zebra", "an", "elephant", "cat", "dog", "in", "the", "grass", "##s", "big", "small", "two",
]
PAD, CLS, SEP = 0, 2, 3


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


def tiny_clip_config(**overrides):
    from transformers import CLIPConfig

    text = {"vocab_size": len(WORDS), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": CLS, "eos_token_id": SEP,
            "pad_token_id": PAD}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16, **overrides)
    return cfg


def _bigger_init(model, seed):
    """Random weights of a larger scale than the default init, so that maps are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "embedding" not in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return model


@pytest.fixture(scope="session")
def tiny_clip():
    """A random CLIPModel: 3 layers, 2 heads per tower; 32x32 images (4x4 patches + CLS)."""
    from transformers import CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(tiny_clip_config()).double().eval()
    model.set_attn_implementation("eager")
    return _bigger_init(model, 0)


@pytest.fixture(scope="session")
def clip_explainer(tiny_clip, tokenizer):
    from attngrad.clip import ClipExplainer, from_hf_clip

    return ClipExplainer(from_hf_clip(tiny_clip, tokenizer))


@pytest.fixture(scope="session")
def pixels():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32, dtype=torch.float64)


TEXTS = ["a photo of a zebra", "an elephant in the grass", "two big cats"]


def lit_like(tokenizer, device=None):
    """A LiT-shaped pair in float64 (ViT class token + mean-pooled BERT, linear projections, seed 3):
    ``(ClipExplainer on device, (vit, bert, img_proj, txt_proj))``."""
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    from attngrad.clip import ClipExplainer, ClipModel, ImageTower, TextTower
    from attngrad.models import Preprocessor

    torch.manual_seed(3)
    vit = ViTModel(ViTConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                             image_size=32, patch_size=8), add_pooling_layer=False).double().eval()
    bert = BertModel(BertConfig(vocab_size=len(tokenizer.vocab), hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32, max_position_embeddings=24,
                                initializer_range=0.3), add_pooling_layer=False).double().eval()
    img_proj = torch.nn.Linear(24, 8, bias=False).double()
    txt_proj = torch.nn.Linear(16, 8, bias=False).double()
    image = ImageTower(vit, img_proj, lambda out: out.last_hidden_state[:, 0], Preprocessor(resize=(32, 32)), (8, 8))
    text = TextTower(bert, txt_proj, tokenizer, read="pooled")
    return ClipExplainer(ClipModel(image, text, 10.0, "tiny LiT"), device=device), (vit, bert, img_proj, txt_proj)
