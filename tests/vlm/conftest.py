"""Tiny random LLaVA models (ViT or CLIP vision encoder + Llama) and a word tokenizer."""

from __future__ import annotations

import pytest
import torch

WORDS = "user answer what is in this photo animal a zebra horse elephant cat dog the".split()
IMAGE = 3  # the image token's id


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2, "<image>": IMAGE}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def tiny_llava(vision: str, *, strategy: str = "default", layer: int = -1, seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, ViTConfig

    torch.manual_seed(seed)
    common = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=16,
                  patch_size=4)
    vcfg = ViTConfig(**common) if vision == "vit" else CLIPVisionConfig(**common)
    tcfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=2)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_index=IMAGE, vision_feature_layer=layer,
                      vision_feature_select_strategy=strategy, attn_implementation="eager")
    return LlavaForConditionalGeneration(cfg).eval()


def tiny_idefics3(seed: int = 0):
    """Idefics3 (SmolVLM's class): a SigLIP-style encoder without class token, pixel shuffle 2 (16 patches -> 4 tokens)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, LlamaConfig
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    torch.manual_seed(seed)
    vcfg = Idefics3VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                                image_size=16, patch_size=4)
    tcfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=2)
    cfg = Idefics3Config(vision_config=vcfg.to_dict(), text_config=tcfg.to_dict(), image_token_id=IMAGE, scale_factor=2,
                         attn_implementation="eager")
    return Idefics3ForConditionalGeneration(cfg).eval()


TEMPLATE = "user <image> {prompt} answer"


@pytest.fixture(scope="session")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="session", params=[("vit", "default", -1), ("clip", "default", -2), ("vit", "full", -1),
                                        ("idefics3", None, None)],
                ids=["vit", "clip-layer-2", "vit-full", "idefics3"])
def explainer(request, tokenizer):
    from attngrad.vlm import VLMAdapter, VLMExplainer

    vision, strategy, layer = request.param
    model = tiny_idefics3() if vision == "idefics3" else tiny_llava(vision, strategy=strategy, layer=layer)
    return VLMExplainer(VLMAdapter(model, tokenizer, template=TEMPLATE), batch_size=2)
