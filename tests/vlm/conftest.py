"""Tiny random LLaVA models (ViT or CLIP vision encoder + Llama), Idefics3 and Qwen2-VL, and a word tokenizer."""

from __future__ import annotations

import json

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


def tiny_qwen2vl(seed: int = 0):
    """Qwen2-VL: 2 vision blocks on 2 x 2 px patches (16 px -> 8 x 8 patches), merged 2 x 2 into 4 x 4 image
    tokens; a 2-layer language model with 3-D rotary positions (head dim 8, mrope sections 1 + 1 + 2). Weights drawn
    wider than the default (std 1 in the vision tower, 0.2 in the language model) so that the vision rollout
    changes reading (b) by tens of percent, not by 1e-3."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=16, hidden_size=16, num_heads=2, mlp_ratio=2, patch_size=2,
                           spatial_merge_size=2, temporal_patch_size=2, initializer_range=1.0),
        text_config=dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, eos_token_id=2, initializer_range=0.2,
                         bos_token_id=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                             "mrope_section": [1, 1, 2]}),
        image_token_id=IMAGE, video_token_id=29, vision_start_token_id=30, vision_end_token_id=31,
        attn_implementation="eager")
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    model.config.attngrad_image_size = 16
    return model


TEMPLATE = "user <image> {prompt} answer"


@pytest.fixture(scope="session")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="session", params=[("vit", "default", -1), ("clip", "default", -2), ("vit", "full", -1),
                                        ("idefics3", None, None), ("qwen2vl", None, None)],
                ids=["vit", "clip-layer-2", "vit-full", "idefics3", "qwen2vl"])
def explainer(request, tokenizer):
    from attngrad.vlm import VLMAdapter, VLMExplainer

    vision, strategy, layer = request.param
    if vision == "qwen2vl":
        model = tiny_qwen2vl()
    else:
        model = tiny_idefics3() if vision == "idefics3" else tiny_llava(vision, strategy=strategy, layer=layer)
    return VLMExplainer(VLMAdapter(model, tokenizer, template=TEMPLATE), batch_size=2)


def save_tiny_llava(root):
    """A tiny random LLaVA with its word tokenizer and a 16 px preprocessor, saved as a Hugging Face folder."""
    model = tiny_llava("vit")
    model.config.attngrad_template = TEMPLATE
    model.save_pretrained(root)
    word_tokenizer().save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 16, "width": 16},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "resample": 2}))
    return root
