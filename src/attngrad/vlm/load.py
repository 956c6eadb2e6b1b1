"""Loading a LLaVA-style model: a folder or Hub name, or the offline stand-in built from shipped parts.

The stand-in is assembled the way LLaVA was built, as a real ``LlavaForConditionalGeneration``:
the shipped ViT-Ti (timm's AugReg weights, 224 px; its last layer's 197 tokens, class token
included, become the image tokens: LLaVA's ``"full"`` feature strategy) as the locked vision
encoder, SmolLM2-135M-Instruct (``attngrad[lm]``) as the locked language model, and LLaVA's
two-layer MLP projector trained here on the 1000 ImageNet sample images
(``scripts/train_vlm.py``; weights in ``assets/vlm/``). It is a **stand-in**, not LLaVA: it was
taught only to name the ImageNet class of a photo.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import AttngradError
from ..models.hf import check_model_folder, first_line, image_processor_config, load_config
from .model import VLMAdapter

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "vlm"
VIT = Path(__file__).resolve().parent.parent / "assets" / "models" / "vit-tiny-patch16-224"
#: the stand-in's settings (image size, template, image token) beside its projector weights
SETTINGS = ASSETS / "vlm.json"
PROJECTOR = ASSETS / "projector.safetensors"
#: model_type -> the transformers class loaded for it
_CLASSES = {"llava": "LlavaForConditionalGeneration", "idefics3": "Idefics3ForConditionalGeneration",
            "qwen2_vl": "Qwen2VLForConditionalGeneration"}
STAND_IN = "attngrad LLaVA stand-in (ViT-Ti + SmolLM2-135M + trained projector)"


def stand_in_settings() -> dict:
    return json.loads(SETTINGS.read_text()) if SETTINGS.exists() else {
        "image_size": 224, "template": "Image: <image>\nQuestion: {prompt}\nAnswer:", "image_token": "<filename>",
        "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
    }


def build_stand_in(*, projector: bool = True, quiet: bool = False):
    """The stand-in ``LlavaForConditionalGeneration``, its tokenizer and its image preprocessor.

    ``projector=False`` leaves the projector at its random initialisation (what ``scripts/train_vlm.py`` trains).
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        ViTConfig,
        ViTModel,
    )
    from transformers.utils import logging as hf_logging

    from ..lm.model import default_model
    from ..models.preprocess import Preprocessor

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    settings = stand_in_settings()
    size = int(settings["image_size"])
    lm_folder = default_model(quiet=quiet)
    tokenizer = AutoTokenizer.from_pretrained(lm_folder)
    text = AutoModelForCausalLM.from_pretrained(lm_folder, dtype=torch.float32)
    vit = ViTModel.from_pretrained(VIT, add_pooling_layer=False)
    vcfg = ViTConfig.from_pretrained(VIT, image_size=size)
    vcfg.id2label, vcfg.label2id = {}, {}
    image_token = tokenizer.convert_tokens_to_ids(settings["image_token"])
    config = LlavaConfig(vision_config=vcfg.to_dict(), text_config=text.config.to_dict(), image_token_index=int(image_token),  # type: ignore[arg-type]
                         vision_feature_layer=int(settings["vision_feature_layer"]),
                         vision_feature_select_strategy=settings.get("vision_feature_select_strategy", "default"),
                         projector_hidden_act="gelu")
    for part in (config.vision_config, config.text_config):
        part._attn_implementation = "eager"  # type: ignore[union-attr]
    config._attn_implementation = "eager"
    config.attngrad_template = settings["template"]
    config.tie_word_embeddings = bool(getattr(text.config, "tie_word_embeddings", False))
    model = LlavaForConditionalGeneration(config)
    state = {f"model.vision_tower.{k}": v for k, v in vit.state_dict().items()}
    pos = state["model.vision_tower.embeddings.position_embeddings"]
    side, new = int(round((pos.shape[1] - 1) ** 0.5)), size // int(vcfg.patch_size)  # type: ignore[arg-type]
    if new != side:  # another input size: the position embeddings resized bicubically to its patch grid
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
        state["model.vision_tower.embeddings.position_embeddings"] = torch.cat(
            [pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)
    for k, v in text.model.state_dict().items():
        state[f"model.language_model.{k}"] = v
    state["lm_head.weight"] = text.lm_head.weight
    if projector:
        if not PROJECTOR.exists():
            raise AttngradError(
                f"the stand-in's projector is missing ({PROJECTOR}); reinstall attngrad or train it with "
                "scripts/train_vlm.py, or pass --model with a LLaVA, Idefics3 or Qwen2-VL folder or Hub name"
            )
        from safetensors.torch import load_file

        state.update({f"model.multi_modal_projector.{k}": v.float() for k, v in load_file(PROJECTOR).items()})
    else:
        gen = torch.Generator().manual_seed(0)
        for name, shape in (("linear_1", (text.config.hidden_size, vcfg.hidden_size)),
                            ("linear_2", (text.config.hidden_size, text.config.hidden_size))):
            state[f"model.multi_modal_projector.{name}.weight"] = torch.randn(*shape, generator=gen) / shape[1] ** 0.5
            state[f"model.multi_modal_projector.{name}.bias"] = torch.zeros(shape[0])
    for key, meta in model.state_dict().items():  # the ViT's pooler is not used by LLaVA (patch features are read)
        if key not in state and ".pooler." in key:
            state[key] = torch.zeros(meta.shape)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    cfg = json.loads((VIT / "preprocessor_config.json").read_text())
    cfg["size"] = {"height": size, "width": size}
    return model, tokenizer, Preprocessor.from_hf(cfg)


def load_vlm(name_or_path=None, *, device=None, quiet: bool = False):
    """``(VLMAdapter, preprocessor)`` for a LLaVA, Idefics3 or Qwen2-VL folder / Hub name, or the stand-in (``None``).

    The image preprocessor is read from the image-processor config as transformers reads it (a local folder, else
    the Hub cache or download); without one, none (the explainer's default) or, for Qwen2-VL, its processor's
    defaults. Qwen2-VL is explained at one square image size (the config's ``attngrad_image_size``, else 448 px):
    its preprocessor resizes to it and normalises with the processor config's mean and std.
    """
    from transformers.utils import logging as hf_logging

    from ..models import check_device

    dev = check_device(device)
    hf_logging.disable_progress_bar()
    settings: dict | None = None
    if name_or_path is None:
        model, tokenizer, preprocess = build_stand_in(quiet=quiet)
    else:
        import transformers
        from transformers import AutoTokenizer

        from ..models.preprocess import Preprocessor

        where = str(name_or_path)
        check_model_folder(where)
        config = load_config(where, what="vision-language model", hint="pass a LlavaForConditionalGeneration folder")
        if config.model_type not in _CLASSES:
            raise AttngradError(f"{where}: a {config.model_type!r} model; attngrad explains "
                                f"{', '.join(_CLASSES.values())} (model_type {', '.join(map(repr, _CLASSES))})")
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
            cls = getattr(transformers, _CLASSES[config.model_type])
            model = cls.from_pretrained(where, attn_implementation="eager", dtype=torch.float32)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise AttngradError(f"cannot load {where!r} as a vision-language model ({first_line(err)})") from None
        settings = image_processor_config(where)  # as AutoImageProcessor reads it: a folder or the Hub (cache)
    if dev is not None:
        model = model.to(dev)
    adapter = VLMAdapter(model, tokenizer)
    if name_or_path is not None:
        settings = settings or adapter.family.processor
        # Qwen2-VL's config gives pixel counts: attngrad explains its one square image size (Preprocessor.from_hf)
        preprocess = Preprocessor.from_hf(settings, image_size=adapter.image_size) if settings else None
    return adapter, preprocess
