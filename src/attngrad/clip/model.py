"""Image–text models as two towers: Hugging Face ``CLIPModel``, and the offline LiT stand-in.

The stand-in (in the manner of LiT, Zhai et al., CVPR 2022: locked image and text towers,
only the heads trained) pairs the shipped ViT-Ti (its pre-logit CLS feature) with
all-MiniLM-L6-v2 (mean pooled), joined by two linear projections trained by
``scripts/train_lit.py`` on 1000 ImageNet sample images and their class names. It is a
small demonstration model, not CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AttngradError
from ..models.hf import check_model_folder, first_line, folder_preprocessor, load_config
from ..models.preprocess import Preprocessor
from .towers import ImageTower, TextTower

#: The stand-in's trained projections (``scripts/train_lit.py``), shipped in the package.
LIT_DIR = Path(str(resources.files("attngrad").joinpath("assets/lit")))
LIT_NAME = "LiT stand-in (ViT-Ti + all-MiniLM-L6-v2, linear heads trained on 1000 ImageNet sample images)"

#: CLIP's image normalisation (``CLIPImageProcessor`` defaults), used when a folder has no preprocessor config.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipModel:
    """Two towers and the similarity's temperature.

    Attributes:
        image, text: the towers.
        logit_scale: ``exp(logit_scale)`` multiplies cosines into zero-shot logits (CLIP's convention).
        name: what was loaded.
        stand_in: ``True`` for the LiT stand-in (say so wherever its results are shown).
    """

    image: ImageTower
    text: TextTower
    logit_scale: float
    name: str
    stand_in: bool = False

    def to(self, device: torch.device | str) -> ClipModel:
        for module in (self.image.encoder, self.image.projection, self.text.encoder, self.text.projection):
            module.to(device)
        return self


def from_hf_clip(model: Any, tokenizer, preprocessor: Preprocessor | None = None, name: str = "") -> ClipModel:
    """Wrap a Hugging Face ``CLIPModel`` (weights untouched) and its tokenizer.

    The image tower reads CLS (``post_layernorm``, then ``visual_projection``); the text tower
    reads the first end-of-text token (``config.text_config.eos_token_id``), as ``CLIPTextModel``
    pools, then ``text_projection``.
    """
    kind = type(model).__name__
    if kind.startswith("Siglip"):
        raise AttngradError(
            f"{kind} pools its image tower with an attention-pooling head, not a CLS token, so there is no row "
            "for the rollout to read; use a CLIPModel"
        )
    if not all(hasattr(model, a) for a in ("vision_model", "text_model", "visual_projection", "text_projection")):
        raise AttngradError(f"{kind} is not a Hugging Face CLIPModel (vision_model + text_model + projections)")
    model.eval()
    vcfg = model.config.vision_config
    size = vcfg.image_size
    patch = vcfg.patch_size
    pre = preprocessor or Preprocessor(resize=(size, size), mean=CLIP_MEAN, std=CLIP_STD)
    image = ImageTower(model.vision_model, model.visual_projection, lambda out: out.pooler_output, pre, (patch, patch))
    text = TextTower(model.text_model, model.text_projection, tokenizer, read="token",
                     eos_token_id=getattr(model.config.text_config, "eos_token_id", None))
    return ClipModel(image, text, float(model.logit_scale.detach().exp()), name or kind)


def load_clip(name_or_path: str | Path | None = None, device: torch.device | str | None = None) -> ClipModel:
    """``None``: the LiT stand-in; otherwise a local ``CLIPModel`` folder or a Hub name (when online/cached)."""
    if name_or_path is None:
        model = load_stand_in()
    else:
        model = _load_hf_clip(name_or_path)
    return model.to(device) if device is not None else model


def _load_hf_clip(name_or_path: str | Path) -> ClipModel:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = check_model_folder(name_or_path)
    where = str(folder if folder is not None else name_or_path)
    hint = "pass a local CLIPModel folder (with its tokenizer), or a Hub name such as openai/clip-vit-base-patch32 when online"
    load_config(where, what="CLIP model", hint=hint)  # a bad folder or name is told before any weights load
    try:
        model = AutoModel.from_pretrained(where, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AttngradError(f"cannot load CLIP model {where!r}: {first_line(err)}; {hint}") from None
    return from_hf_clip(model, tokenizer, folder_preprocessor(where), where)


class _Pick(nn.Module):
    """A linear projection without bias, loaded from the stand-in's safetensors."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def stand_in_towers(projections: dict[str, torch.Tensor] | None = None) -> tuple[ImageTower, TextTower]:
    """The stand-in's towers: shipped ViT-Ti (pre-logit CLS) and all-MiniLM-L6-v2 (mean pooled).

    ``projections`` holds ``image`` (E, 192) and ``text`` (E, 384); ``None`` gives identity
    projections (the raw features, used by ``scripts/train_lit.py`` to cache them).
    """
    from transformers import AutoModel, AutoTokenizer, ViTForImageClassification
    from transformers.utils import logging as hf_logging

    from ..models import DEFAULT_MODEL, load_model
    from ..text.explainer import default_model

    hf_logging.disable_progress_bar()  # stderr carries one line per mistake, no progress bar before it
    vit = ViTForImageClassification.from_pretrained(str(DEFAULT_MODEL), attn_implementation="eager")
    pre = getattr(load_model(DEFAULT_MODEL), "preprocessor")  # noqa: B009  (the default model is an image adapter)
    minilm = default_model()
    bert = AutoModel.from_pretrained(str(minilm), attn_implementation="eager", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm), local_files_only=True)
    image_proj: nn.Module
    text_proj: nn.Module
    if projections is None:
        image_proj, text_proj = nn.Identity(), nn.Identity()
    else:
        image_proj, text_proj = _Pick(projections["image"]), _Pick(projections["text"])
    patch: Any = vit.config.patch_size
    image = ImageTower(vit.vit, image_proj, lambda out: out.last_hidden_state[:, 0], pre, (patch, patch))
    text = TextTower(bert, text_proj, tokenizer, read="pooled")
    return image, text


def load_stand_in(folder: str | Path | None = None) -> ClipModel:
    """The LiT stand-in with the projections in ``folder`` (default: the shipped ones)."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else LIT_DIR
    weights = folder / "projections.safetensors"
    if not weights.exists():
        raise AttngradError(f"{weights} is missing; train the stand-in with scripts/train_lit.py")
    tensors = load_file(str(weights))
    image, text = stand_in_towers(tensors)
    scale = float(tensors["logit_scale"].exp()) if "logit_scale" in tensors else 100.0
    return ClipModel(image, text, scale, LIT_NAME, stand_in=True)
