"""Image–text models explained on both towers: Hugging Face CLIP and the offline LiT stand-in.

``ClipExplainer`` explains ``cos(image, text)`` with the rollout family (``complete``, ``gae``,
``absolute``, ``rollout``), the last-layer baselines (``raw_attention``, ``attn_gradcam``) and
the Grad-ECLIP pair (``gradeclip``, ``attention_eclip``; see :mod:`attngrad.clip.eclip`), as a
map on the image's patch grid or as scores over the text's tokens.
"""

from .eclip import AttentionEclip, GradEclip, loosened_attention
from .explainer import CLIP_METHODS, TOWERS, ClipExplainer, ClipExplanation, clip_method
from .model import LIT_DIR, LIT_NAME, ClipModel, from_hf_clip, load_clip, load_stand_in
from .towers import (
    AttentionParts,
    ImageTower,
    TextBatch,
    TextTower,
    last_attention_parts,
)

__all__ = [
    "CLIP_METHODS",
    "LIT_DIR",
    "LIT_NAME",
    "TOWERS",
    "AttentionEclip",
    "AttentionParts",
    "ClipExplainer",
    "ClipExplanation",
    "ClipModel",
    "GradEclip",
    "ImageTower",
    "TextBatch",
    "TextTower",
    "clip_method",
    "from_hf_clip",
    "last_attention_parts",
    "load_clip",
    "load_stand_in",
    "loosened_attention",
]
