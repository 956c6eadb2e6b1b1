"""A LLaVA-style vision–language model seen by attngrad: both towers' attention maps from one pass.

:class:`VLMAdapter` wraps an unmodified Hugging Face ``LlavaForConditionalGeneration``,
``Idefics3ForConditionalGeneration`` or ``Qwen2VLForConditionalGeneration`` (a vision encoder, a
projector, a causal language model) and its tokenizer. The image's patch features
become ``K`` image tokens of the language model; attngrad finds them by the config's
``image_token_id``. One forward pass returns the next-token logits at the last prompt position,
every language-model layer's attention maps (B, H, N, N) and every vision-encoder layer's maps
(B, H, M, M), all in the autograd graph (eager attention), and the language model's input
embeddings (image tokens included) for ``grad_x_input``.

Per-architecture knowledge is in small tables: :data:`VISION_TOWERS` (where a vision encoder's
layers are, which submodule returns the attention probabilities, and whether its token 0 is a
class token), :data:`LANGUAGE_MODELS`, and :data:`FAMILIES`: per model class a :class:`Family`
holding the few values and functions that differ (where the towers are, the default template, the
image size, how image tokens group vision tokens, the model's inputs, how the vision maps are read). Prompts are left-padded; position ids count from each prompt's first real token, so
a prompt's map in a batch equals its map alone.

Qwen2-VL differs in three ways, handled by its :class:`Family` entry: its processor's input is flattened patches with an
``image_grid_thw`` (built by :func:`qwen2vl_patches` from a normal (B, 3, H, W) tensor at one fixed
image size); its language model takes 3-D rotary positions, computed per prompt by the model's own
``get_rope_index`` on the real tokens only (so left padding changes nothing); its vision attention
returns no maps, so they are read through transformers' attention-function interface (the
model's own eager attention, registered under a name of ours for the call only).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from ..lm.model import left_pad
from ..models.hf import attention_function

#: model_type of the vision config -> (dotted path of its layer list, attention submodule, has a class token)
VISION_TOWERS: dict[str, tuple[str, str, bool]] = {
    "vit": ("layers", "attention", True),
    "clip_vision_model": ("encoder.layers", "self_attn", True),
    "siglip_vision_model": ("encoder.layers", "self_attn", False),
    "idefics3_vision": ("encoder.layers", "self_attn", False),
    "qwen2_vl_vision": ("blocks", "attn", False),
}

#: Qwen2-VL's image size when neither the call nor the config (``attngrad_image_size``) gives one: 32 x 32 patches
QWEN2VL_IMAGE_SIZE = 448
QWEN2VL_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><image><|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n")

#: model_type of the text config -> (dotted path of its decoder layers inside the language model, attention submodule)
LANGUAGE_MODELS: dict[str, tuple[str, str]] = {
    "llama": ("layers", "self_attn"),
    "mistral": ("layers", "self_attn"),
    "qwen2": ("layers", "self_attn"),
    "qwen2_vl_text": ("layers", "self_attn"),
}


def qwen2vl_patches(pixels: torch.Tensor, *, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL's processor layout of (B, 3, H, W) pixel values: flattened patches (B·h·w, 3·temporal·patch²)
    and ``image_grid_thw`` (B, 3) = ``[1, h, w]`` per image, ``h = H / patch``.

    Patches run over merge blocks in reading order, then over the ``merge x merge`` patches inside a block
    (so each consecutive ``merge²`` patches become one image token); a still image is repeated ``temporal``
    times along time. Differentiable (the pixels' gradient flows back through it).
    """
    b, c, height, width = pixels.shape
    h, w = height // patch, width // patch
    x = pixels.reshape(b, c, h // merge, merge, patch, w // merge, merge, patch).permute(0, 2, 5, 3, 6, 1, 4, 7)
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)
    flat = x.reshape(b * h * w, c * temporal * patch * patch)
    grid = torch.tensor([[1, h, w]] * b, dtype=torch.long, device=pixels.device)
    return flat, grid


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
    """What one pass gives: logits (B, V) at the last position, the maps of both towers, and the LM's input embeddings.

    ``vision_maps`` holds ``vision_chunks`` tensors per vision layer, layer after layer, each covering consecutive
    images (1 for LLaVA / Idefics3: one (B, H, M, M) per layer; B for Qwen2-VL: one (1, H, M, M) per image), so
    that gradients can be taken with respect to the very tensors the model used.
    """

    logits: torch.Tensor
    text_maps: list[torch.Tensor]
    vision_maps: list[torch.Tensor]
    embeds: torch.Tensor | None
    vision_chunks: int = 1


class VLMAdapter:
    """An unmodified ``LlavaForConditionalGeneration`` and its tokenizer (weights untouched, eval mode).

    Args:
        model: the model (loaded with eager attention).
        tokenizer: its tokenizer.
        template: the prompt around the question; ``<image>`` marks where the image tokens go and
            ``{prompt}`` the question (default: the config's ``attngrad_template``, else Qwen2-VL's chat
            template for Qwen2-VL, else LLaVA-1.5's ``"USER: <image>\\n{prompt} ASSISTANT:"``).
        image_size: Qwen2-VL only: the one square image size explained (a multiple of patch x merge size;
            default: the config's ``attngrad_image_size``, else 448).
    """

    def __init__(self, model: Any, tokenizer, *, template: str | None = None, image_size: int | None = None):
        self.model: Any = model.eval()  # a transformers model (config, .model.vision_tower, ...)
        self.tokenizer = tokenizer
        config: Any = self.model.config
        name = type(model).__name__
        if name not in FAMILIES:
            raise AttngradError(f"{name} is not supported; attngrad explains {', '.join(FAMILIES)}")
        self.family: Family = FAMILIES[name]
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
        self.vision_layers = list(_get(_get(self.model, self.family.vision), layers))
        text_layers, self._text_attn = LANGUAGE_MODELS[ttype]
        self.text_module = _get(self.model, self.family.text)
        self.text_layers = list(_get(self.text_module, text_layers))
        self.image_token_id = int(getattr(config, "image_token_id", getattr(config, "image_token_index", -1)))
        #: raster patch -> vision token (None: the vision tokens are in reading order already)
        self.raster: torch.Tensor | None = None
        vc = config.vision_config
        #: pixels per patch side; patches per image token side (Qwen2-VL's merger); still frames per patch (Qwen2-VL)
        self.patch, self.merge = int(vc.patch_size), int(getattr(vc, "spatial_merge_size", 1))
        self.temporal = int(getattr(vc, "temporal_patch_size", 1))
        self.image_size: int = self.family.image_size(self, config, image_size)
        side = self.image_size // self.patch
        #: the vision encoder's patch grid (reading "vision" maps) and the vision tokens before the patches
        self.grid: tuple[int, int] = (side, side)
        self.first_patch = 1 if self.has_cls else 0
        #: whether image token k keeps the class token (LLaVA's "full" features); per image token the vision
        #: tokens it is made of (K, g); the image tokens' grid; the vision layers whose maps shape the features
        self.keeps_cls = False
        self.groups = torch.zeros(0, 1, dtype=torch.long)
        self.token_grid: tuple[int, int] = (side, side)
        self.vision_depth = len(self.vision_layers)
        self.family.image_tokens(self, config, side)
        self.num_image_tokens: int = int(self.groups.shape[0])
        self.template = template or getattr(config, "attngrad_template", None) or self.family.template
        if "<image>" not in self.template or "{prompt}" not in self.template:
            raise AttngradError("a VLM template needs '<image>' (where the image goes) and '{prompt}' (the question)")
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    @property
    def qwen(self) -> bool:
        """Whether the model is a Qwen2-VL (for callers whose references cover the other families only)."""
        return self.family is FAMILIES["Qwen2VLForConditionalGeneration"]

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
        pixels = pixel_values.to(self.device)
        try:
            with self.family.vision_maps(self, vis, vision_maps), self._capture(txt, text_maps):
                out = self.model(**self.inputs(pixels, batch), use_cache=False)
        finally:
            pre.remove()
        chunks = pixels.shape[0] if self.family.vision_maps_per_image else 1
        return VLMForward(out.logits[:, -1], text_maps, vision_maps, embeds[0] if embeds else None, chunks)

    def inputs(self, pixels: torch.Tensor, batch: VLMBatch) -> dict[str, Any]:
        """The model's keyword inputs for ``pixels`` (B, 3, H, W) and the prompts ``batch`` (its family's layout)."""
        return self.family.inputs(self, pixels, batch)

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


# ----------------------------------------------------------------------------- the families


def _fixed_size(adapter: VLMAdapter, config: Any, image_size: int | None) -> int:
    if image_size is not None:
        raise AttngradError("image_size is for Qwen2-VL only (LLaVA and Idefics3 take their config's image size)")
    return int(config.vision_config.image_size)


def _qwen_size(adapter: VLMAdapter, config: Any, image_size: int | None) -> int:
    size = image_size or getattr(config, "attngrad_image_size", None) or QWEN2VL_IMAGE_SIZE
    if int(size) < 1 or int(size) % (adapter.patch * adapter.merge):
        raise AttngradError(f"Qwen2-VL's image size must be a multiple of {adapter.patch * adapter.merge} px "
                            f"(patch {adapter.patch} x merge {adapter.merge}), not {size}")
    return int(size)


def _llava_tokens(adapter: VLMAdapter, config: Any, side: int) -> None:
    """Image token k is the feature of one vision token: the patches, plus the class token under "full"."""
    adapter.keeps_cls = adapter.has_cls and getattr(config, "vision_feature_select_strategy", "default") == "full"
    first = 0 if adapter.keeps_cls else adapter.first_patch
    adapter.groups = torch.arange(first, side * side + adapter.first_patch)[:, None]
    layer = getattr(config, "vision_feature_layer", -1)
    if not isinstance(layer, int):
        raise AttngradError("a vision_feature_layer list (features of several layers) is not supported")
    adapter.vision_depth = layer % (len(adapter.vision_layers) + 1)  # hidden_states[i]: the output of i layers


def _idefics_tokens(adapter: VLMAdapter, config: Any, side: int) -> None:
    """Idefics3 / SmolVLM: pixel shuffle puts s x s neighbouring patches into one image token."""
    scale = int(config.scale_factor)
    index = torch.arange(side * side, dtype=torch.float32)[None, :, None]
    adapter.groups = adapter.model.model.connector.pixel_shuffle(index, scale)[0].long()  # (K, s*s) patch indices
    adapter.token_grid = (side // scale, side // scale)


def _qwen_tokens(adapter: VLMAdapter, config: Any, side: int) -> None:
    """The merger puts each merge x merge block of patches (consecutive vision tokens) into one token."""
    s, blocks = adapter.merge, side // adapter.merge
    adapter.groups = torch.arange(side * side).reshape(-1, s * s)  # (K, s*s) vision tokens
    r, c = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    adapter.raster = (((r // s) * blocks + c // s) * s * s + (r % s) * s + c % s).flatten()
    adapter.token_grid = (blocks, blocks)


def _plain_inputs(image_axis: bool) -> Callable[[VLMAdapter, torch.Tensor, VLMBatch], dict[str, Any]]:
    """LLaVA's / Idefics3's inputs: the pixel values (with an images-per-prompt axis for Idefics3) and the prompts."""
    def inputs(adapter: VLMAdapter, pixels: torch.Tensor, batch: VLMBatch) -> dict[str, Any]:
        return dict(input_ids=batch.input_ids, pixel_values=pixels[:, None] if image_axis else pixels,
                    attention_mask=batch.attention_mask, position_ids=batch.position_ids)

    return inputs


def _qwen_inputs(adapter: VLMAdapter, pixels: torch.Tensor, batch: VLMBatch) -> dict[str, Any]:
    """Qwen2-VL's inputs: flattened patches, their grids, and the 3-D rotary positions of each prompt's real tokens."""
    if tuple(pixels.shape[-2:]) != (adapter.image_size, adapter.image_size):
        raise AttngradError(f"this Qwen2-VL is explained at one image size, {adapter.image_size} x {adapter.image_size} "
                            f"px; got {pixels.shape[-2]} x {pixels.shape[-1]} (resize the image, or pass image_size)")
    flat, grid = qwen2vl_patches(pixels, patch=adapter.patch, merge=adapter.merge, temporal=adapter.temporal)
    kinds = (batch.input_ids == adapter.image_token_id).int()
    # the model's own positions, computed on each prompt's real tokens (padding gets 0 and is masked)
    positions, _ = adapter.model.model.get_rope_index(batch.input_ids, kinds, grid, attention_mask=batch.attention_mask)
    return dict(input_ids=batch.input_ids, pixel_values=flat, image_grid_thw=grid, mm_token_type_ids=kinds,
                attention_mask=batch.attention_mask, position_ids=positions)


def _hooked_maps(adapter: VLMAdapter, modules: Sequence[nn.Module], into: list[torch.Tensor]) -> ContextManager[None]:
    """Vision attention that returns its maps: kept by forward hooks (one (B, H, M, M) per layer)."""
    return adapter._capture(modules, into)


@contextmanager
def _qwen_vision_maps(adapter: VLMAdapter, modules: Sequence[nn.Module], into: list[torch.Tensor]) -> Iterator[None]:
    """Qwen2-VL's vision attention returns no maps: within the context it runs the model's own eager
    attention through transformers' attention interface, under a name of ours, keeping each map (1, H, M, M)."""
    own: Any = sys.modules[type(modules[0]).__module__].eager_attention_forward

    def attention(module, query, key, value, attention_mask, **kwargs):
        output, weights = own(module, query, key, value, attention_mask, **kwargs)
        into.append(weights)
        return output, weights

    configs: list[Any] = list({id(m.config): m.config for m in modules}.values())
    with attention_function(configs, attention, masks=False, prefix="attngrad_vision_maps_"):
        yield


@dataclass(frozen=True)
class Family:
    """What differs between the VLM families attngrad explains (one entry of :data:`FAMILIES`).

    Attributes:
        vision, text: dotted paths of the vision encoder and the language model inside the model.
        template: the default prompt template (``<image>`` and ``{prompt}``).
        image_size: ``(adapter, config, image_size)`` -> the one image size explained (checks the argument).
        image_tokens: ``(adapter, config, side)`` sets how image tokens group vision tokens (``groups``,
            ``token_grid``, ``keeps_cls``, ``vision_depth``, ``raster``).
        inputs: ``(adapter, pixels, batch)`` -> the model's keyword inputs.
        vision_maps: ``(adapter, modules, into)`` -> a context keeping the vision attention maps in ``into``.
        vision_maps_per_image: the vision attention runs once per image (maps (1, H, M, M)), not per batch.
        processor: the image-processor config assumed when a model comes without one (``None``: none).
    """

    vision: str
    text: str
    template: str
    image_size: Callable[[VLMAdapter, Any, int | None], int]
    image_tokens: Callable[[VLMAdapter, Any, int], None]
    inputs: Callable[[VLMAdapter, torch.Tensor, VLMBatch], dict[str, Any]]
    vision_maps: Callable[[VLMAdapter, Sequence[nn.Module], list[torch.Tensor]], ContextManager[None]] = _hooked_maps
    vision_maps_per_image: bool = False
    processor: dict[str, Any] | None = None


LLAVA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"

#: model class -> its :class:`Family`
FAMILIES: dict[str, Family] = {
    "LlavaForConditionalGeneration": Family("model.vision_tower", "model.language_model", LLAVA_TEMPLATE,
                                            _fixed_size, _llava_tokens, _plain_inputs(False)),
    "Idefics3ForConditionalGeneration": Family("model.vision_model", "model.text_model", LLAVA_TEMPLATE,
                                               _fixed_size, _idefics_tokens, _plain_inputs(True)),
    "Qwen2VLForConditionalGeneration": Family("model.visual", "model.language_model", QWEN2VL_TEMPLATE, _qwen_size,
                                              _qwen_tokens, _qwen_inputs, _qwen_vision_maps, vision_maps_per_image=True,
                                              processor={"image_processor_type": "Qwen2VLImageProcessor"}),
}
