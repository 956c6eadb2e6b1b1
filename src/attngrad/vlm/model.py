"""A LLaVA-style vision–language model seen by attngrad: both towers' attention maps from one pass.

:class:`VLMAdapter` wraps an unmodified Hugging Face ``LlavaForConditionalGeneration`` (a vision
encoder, a projector, a causal language model) and its tokenizer. The image's patch features
become ``K`` image tokens of the language model; attngrad finds them by the config's
``image_token_id``. One forward pass returns the next-token logits at the last prompt position,
every language-model layer's attention maps (B, H, N, N) and every vision-encoder layer's maps
(B, H, M, M), all in the autograd graph (eager attention), and the language model's input
embeddings (image tokens included) for ``grad_x_input``.

Per-architecture knowledge is the small table :data:`VISION_TOWERS`: where a vision encoder's
layers are, which submodule returns the attention probabilities, and whether its token 0 is a
class token. Prompts are left-padded; position ids count from each prompt's first real token, so
a prompt's map in a batch equals its map alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from ..lm.model import left_pad

#: model_type of the vision config -> (dotted path of its layer list, attention submodule, has a class token)
VISION_TOWERS: dict[str, tuple[str, str, bool]] = {
    "vit": ("layers", "attention", True),
    "clip_vision_model": ("encoder.layers", "self_attn", True),
    "siglip_vision_model": ("encoder.layers", "self_attn", False),
    "idefics3_vision": ("encoder.layers", "self_attn", False),
}

#: model class -> (vision encoder, language model inside it, pixel values with an images-per-prompt axis)
FAMILIES: dict[str, tuple[str, str, bool]] = {
    "LlavaForConditionalGeneration": ("model.vision_tower", "model.language_model", False),
    "Idefics3ForConditionalGeneration": ("model.vision_model", "model.text_model", True),
}

#: model_type of the text config -> (dotted path of its decoder layers inside the language model, attention submodule)
LANGUAGE_MODELS: dict[str, tuple[str, str]] = {
    "llama": ("layers", "self_attn"),
    "mistral": ("layers", "self_attn"),
    "qwen2": ("layers", "self_attn"),
}


def _get(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


@dataclass
class VLMBatch:
    """Left-padded prompts, each holding the image tokens once.

    Attributes:
        input_ids, attention_mask, position_ids: (B, N).
        lengths: real tokens per prompt (at the end of each row).
        image_start: per prompt, the column of its first image token (its K image tokens follow).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: list[int]
    image_start: list[int]


@dataclass
class VLMForward:
    """What one pass gives: logits (B, V) at the last position, the maps of both towers, and the LM's input embeddings."""

    logits: torch.Tensor
    text_maps: list[torch.Tensor]
    vision_maps: list[torch.Tensor]
    embeds: torch.Tensor | None


class VLMAdapter:
    """An unmodified ``LlavaForConditionalGeneration`` and its tokenizer (weights untouched, eval mode).

    Args:
        model: the model (loaded with eager attention).
        tokenizer: its tokenizer.
        template: the prompt around the question; ``<image>`` marks where the image tokens go and
            ``{prompt}`` the question (default: LLaVA-1.5's ``"USER: <image>\\n{prompt} ASSISTANT:"``).
    """

    def __init__(self, model: Any, tokenizer, *, template: str | None = None):
        self.model: Any = model.eval()  # a transformers model (config, .model.vision_tower, ...)
        self.tokenizer = tokenizer
        config: Any = self.model.config
        family = type(model).__name__
        if family not in FAMILIES:
            raise AttngradError(
                f"{family} is not supported; attngrad explains {' and '.join(FAMILIES)} (Qwen2-VL merges patches "
                "with 3-D rotary positions and variable grids: not yet)"
            )
        vision_path, text_path, self._image_axis = FAMILIES[family]
        vtype = config.vision_config.model_type
        ttype = config.text_config.model_type
        if vtype not in VISION_TOWERS:
            raise AttngradError(f"vision encoder {vtype!r} is not in attngrad's table; known: {', '.join(VISION_TOWERS)}")
        if ttype not in LANGUAGE_MODELS:
            raise AttngradError(f"language model {ttype!r} is not in attngrad's table; known: {', '.join(LANGUAGE_MODELS)}")
        for part in (config.vision_config, config.text_config):
            if getattr(part, "_attn_implementation", "eager") != "eager":
                raise AttngradError("load the model with attn_implementation='eager' so that its attention maps exist")
        layers, self._vision_attn, self.has_cls = VISION_TOWERS[vtype]
        self.vision_layers = list(_get(_get(self.model, vision_path), layers))
        text_layers, self._text_attn = LANGUAGE_MODELS[ttype]
        self.text_module = _get(self.model, text_path)
        self.text_layers = list(_get(self.text_module, text_layers))
        self.image_token_id = int(getattr(config, "image_token_id", getattr(config, "image_token_index", -1)))
        side = int(config.vision_config.image_size) // int(config.vision_config.patch_size)
        #: the vision encoder's patch grid (reading "vision" maps) and the vision tokens before the patches
        self.grid: tuple[int, int] = (side, side)
        self.first_patch = 1 if self.has_cls else 0
        n = len(self.vision_layers)
        if family == "LlavaForConditionalGeneration":
            # image token k is the feature of one vision token: the patches, plus the class token under "full"
            self.keeps_cls = self.has_cls and getattr(config, "vision_feature_select_strategy", "default") == "full"
            first = 0 if self.keeps_cls else self.first_patch
            self.groups = torch.arange(first, side * side + self.first_patch)[:, None]
            self.token_grid: tuple[int, int] = (side, side)
            layer = getattr(config, "vision_feature_layer", -1)
            if not isinstance(layer, int):
                raise AttngradError("a vision_feature_layer list (features of several layers) is not supported")
            #: vision layers whose maps shape the image features (hidden_states[i] is the output of i layers)
            self.vision_depth = layer % (n + 1)
        else:  # Idefics3 / SmolVLM: pixel shuffle puts s x s neighbouring patches into one image token
            self.keeps_cls = False
            scale = int(config.scale_factor)
            index = torch.arange(side * side, dtype=torch.float32)[None, :, None]
            self.groups = self.model.model.connector.pixel_shuffle(index, scale)[0].long()  # (K, s*s) patch indices
            self.token_grid = (side // scale, side // scale)
            self.vision_depth = n
        self.num_image_tokens: int = int(self.groups.shape[0])
        self.template = template or getattr(config, "attngrad_template", None) or "USER: <image>\n{prompt} ASSISTANT:"
        if "<image>" not in self.template or "{prompt}" not in self.template:
            raise AttngradError("a VLM template needs '<image>' (where the image goes) and '{prompt}' (the question)")
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    # ------------------------------------------------------------------ tokens

    def prompt_ids(self, prompt: str) -> tuple[list[int], int]:
        """Token ids of the template around ``prompt`` with the image tokens in place, and where they start."""
        before, after = self.template.split("<image>", 1)
        head = list(self.tokenizer(before.format(prompt=prompt), add_special_tokens=True)["input_ids"])
        tail = list(self.tokenizer(after.format(prompt=prompt), add_special_tokens=False)["input_ids"])
        if self.image_token_id in head or self.image_token_id in tail:
            raise AttngradError("the prompt contains the image token's text; remove it")
        return head + [self.image_token_id] * self.num_image_tokens + tail, len(head)

    def batch(self, sequences: Sequence[Sequence[int]], image_starts: Sequence[int]) -> VLMBatch:
        """Left-pad token id lists (each with its image tokens) into a :class:`VLMBatch` on the model's device."""
        ids, mask, positions = left_pad(sequences, self.pad_id, self.device)
        n = ids.shape[1]
        starts = [n - len(s) + int(p) for s, p in zip(sequences, image_starts)]
        return VLMBatch(ids, mask, positions, [len(s) for s in sequences], starts)

    def token_text(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]

    # ------------------------------------------------------------------ forward

    @contextmanager
    def _capture(self, modules: Sequence[nn.Module], into: list[torch.Tensor]) -> Iterator[None]:
        """Forward hooks that keep each module's attention probabilities (its output[1]); always removed."""
        def hook(module, inputs, output):
            probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if probs is None or probs.dim() != 4:
                raise AttngradError(f"{type(module).__name__} returned no attention maps; load the model with "
                                    "attn_implementation='eager'")
            into.append(probs)

        handles = [m.register_forward_hook(hook) for m in modules]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, pixel_values: torch.Tensor, batch: VLMBatch, *, keep_embeds: bool = False) -> VLMForward:
        """Logits at the last position and both towers' maps, in the graph (run under grad when gradients are wanted)."""
        text_maps: list[torch.Tensor] = []
        vision_maps: list[torch.Tensor] = []
        embeds: list[torch.Tensor] = []
        lm = self.text_module

        def grab(module, args, kwargs):
            x = kwargs.get("inputs_embeds")
            if x is not None and keep_embeds:
                if x.requires_grad:
                    x.retain_grad()
                embeds.append(x)

        pre = lm.register_forward_pre_hook(grab, with_kwargs=True)
        vis = [_get(layer, self._vision_attn) for layer in self.vision_layers]
        txt = [_get(layer, self._text_attn) for layer in self.text_layers]
        try:
            with self._capture(vis, vision_maps), self._capture(txt, text_maps):
                pixels = pixel_values.to(self.device)
                out = self.model(input_ids=batch.input_ids, pixel_values=pixels[:, None] if self._image_axis else pixels,
                                 attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False)
        finally:
            pre.remove()
        return VLMForward(out.logits[:, -1], text_maps, vision_maps, embeds[0] if embeds else None)

    @contextmanager
    def frozen_weights(self) -> Iterator[None]:
        """Weights need no gradient during an explanation (restored after)."""
        params = list(self.model.parameters())
        before = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, before):
                p.requires_grad_(flag)
