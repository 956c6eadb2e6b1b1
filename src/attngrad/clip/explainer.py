"""``ClipExplainer``: why an image and a text are similar, on the image tower or the text tower.

The explained score is the cosine similarity of the two towers' embeddings (the logits the
losses see are the cosines of an image with every given text, i.e. CLIP's zero-shot logits
before the temperature). For the image tower, every (image b, text k) pair is one row of the
batch: the images are repeated K times, the text embeddings are fixed, and one forward and one
backward pass give all B x K maps on the patch grid. For the text tower the texts are repeated
B times and the image embeddings are fixed; a map scores the text's tokens.

Rows read (Cui, Fan & Chen's rollout family reads one row of ``prod_l (I + E_H(w ⊙ A(l)))``):
the image tower reads CLS. CLIP's text tower reads the end-of-text token, whose position
differs per text: each item's maps are permuted so that its read token comes first (the
rollout product is permutation-equivariant, ``prod (I + P M P^T) = P (prod (I + M)) P^T``), the
methods read row 0, and the scores are permuted back. A mean-pooled text tower (the LiT
stand-in's MiniLM) reads every real token's row, ``mean_{i real} (R - I)[i, :]``, as
:mod:`attngrad.text` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import AttngradError
from ..explainer import Explainer
from ..io import ImageLike, load_image
from ..losses import LossLike, get_loss
from ..methods import (
    METHODS,
    AttentionGradCAM,
    IntegratedGradients,
    Method,
    RawAttention,
    Rollout,
    Trace,
    get_method,
    method_options,
)
from ..models.base import ForwardOutput, ModelAdapter
from ..results import Result, Spot
from .eclip import AttentionEclip, GradEclip, _Eclip
from .model import ClipModel, load_clip
from .towers import ImageTower, TextBatch, TextTower

Images = ImageLike | Sequence[ImageLike] | torch.Tensor

#: Methods defined for CLIP towers: the rollout family, the last-layer baselines and the ECLIP pair.
CLIP_METHODS = ("complete", "gae", "absolute", "rollout", "rollout_eq1", "raw_attention", "attn_gradcam",
                "gradeclip", "attention_eclip", "ig", "grad_x_input")
_ECLIP = {"gradeclip": GradEclip, "attention_eclip": AttentionEclip}
TOWERS = ("image", "text")


def clip_method(method: str | Method, *, start_layer: int = 0) -> Method:
    """A method instance for CLIP towers from its name (see :data:`CLIP_METHODS`)."""
    if isinstance(method, Method):
        return method
    if method in _ECLIP:
        return _ECLIP[method]()
    if method not in CLIP_METHODS:
        raise AttngradError(f"method {method!r} is not defined for CLIP towers; choose from {', '.join(CLIP_METHODS)}")
    if method not in METHODS:
        raise AttngradError(f"unknown method {method!r}")
    # the last-layer baselines take no start layer; the rollout family does
    takes_start = "start_layer" in method_options(METHODS[method])
    return get_method(method, start_layer=start_layer) if takes_start else get_method(method)


@dataclass
class ClipExplanation(Result):
    """Maps for every (image, text) pair, with what produced them.

    Attributes:
        maps: image tower: (B, K, gh, gw) on the patch grid; text tower: (B, K, N) over the text
            tokens (0 at special tokens and padding). Raw scores, sign kept.
        similarity: (B, K) cosine of image b and text k.
        tower, method, loss: names.
        texts: the K texts; ``batch``: their tokens, word ids, offsets (for display).
        images: the images as the model saw them.
        model: the model's name; ``stand_in``: ``True`` for the LiT stand-in.

    As a :class:`~attngrad.results.Result`: an item is an image ``b``, read against one text ``text=``
    (default the first): :meth:`scores`, :meth:`position_names` and :meth:`top` take ``(b, text=k)`` and
    cover the patch grid (image tower) or text ``k``'s real tokens (text tower; special tokens never
    listed by :meth:`top`). :meth:`normalized` divides by each (image, text) pair's peak.
    """

    maps: torch.Tensor
    similarity: torch.Tensor
    tower: str
    method: str
    loss: str
    texts: list[str]
    batch: TextBatch
    images: list[Image.Image]
    model: str
    stand_in: bool

    def normalized(self) -> torch.Tensor:
        """``S / max|S|`` per (image, text) pair: values in [-1, 1], sign kept (method.md, "Display")."""
        flat = self.maps.flatten(2)
        peak = flat.abs().amax(dim=2).clamp(min=torch.finfo(self.maps.dtype).tiny)
        return self.maps / peak.view(*peak.shape, *[1] * (self.maps.ndim - 2))

    @property
    def grid(self) -> tuple[int, int] | None:
        return (self.maps.shape[-2], self.maps.shape[-1]) if self.tower == "image" else None

    def scores(self, index: int, *, text: int = 0) -> torch.Tensor:
        """Image ``index`` against text ``text``: raw scores over the grid (flattened) or the text's real tokens."""
        if self.grid is not None:
            return self.maps[index, text].flatten()
        return self.maps[index, text, : len(self.batch.tokens[text])]

    def position_names(self, index: int, *, text: int = 0) -> list[str]:
        return super().position_names(index) if self.grid is not None else list(self.batch.tokens[text])

    def top(self, index: int, k: int = 5, *, text: int = 0) -> list[Spot]:
        """Image ``index`` against text ``text``: its ``k`` highest-scored positions, best first."""
        keep = None if self.grid is not None else self.batch.content[text, : len(self.batch.tokens[text])]
        return self._spots(self.scores(index, text=text), self.position_names(index, text=text), keep, k)

    def token_scores(self, image: int, text: int) -> list[tuple[str, float]]:
        """Text tower: ``(token, raw score)`` for the scored tokens of text ``text`` explained against image ``image``."""
        if self.tower != "text":
            raise AttngradError("token scores exist for tower='text' explanations only")
        real = len(self.batch.tokens[text])
        keep = self.batch.content[text, :real].tolist()
        scores = self.maps[image, text, :real].tolist()
        return [(t, s) for t, s, k in zip(self.batch.tokens[text], scores, keep) if k]


class _TowerView(ModelAdapter):
    """One tower seen by :meth:`attngrad.Explainer.trace` as a classifier over the other tower's items.

    Its "logits" (R, C) are the cosines of each row's embedding with the fixed, normalised
    embeddings of the other tower (C items).
    """

    def __init__(self, tower: ImageTower | TextTower, fixed: torch.Tensor, labels: list[str],
                 batch: TextBatch | None = None):
        self.tower = tower
        self.model = tower.encoder
        self.fixed = fixed
        self.labels = labels
        self.batch = batch
        self.special_tokens = {"cls": 0}
        if isinstance(tower, ImageTower):
            self.preprocessor = tower.preprocessor
            self.patch_size = tower.patch_size

    def forward(self, inputs: torch.Tensor) -> ForwardOutput:
        tower: Any = self.tower  # an image tower takes pixels; a text tower, embeddings and their batch
        out = tower.forward(inputs) if self.batch is None else tower.forward(inputs, self.batch)
        return ForwardOutput(F.normalize(out.logits, dim=-1) @ self.fixed.T, out.attentions)

    def override_attention(self, maps):
        return self.tower.override_attention(maps)

    def attention_parts(self):
        return self.tower.attention_parts()

    def grid(self, inputs: torch.Tensor) -> tuple[int, int]:
        if self.batch is None:
            return self.tower.grid(inputs)
        return 1, inputs.shape[1] - 1

    def token_index(self, token: int | str) -> int | slice:  # a pooled tower reads all rows
        return slice(None) if token == "pooled" else 0


def _swap_first(tensors: list[torch.Tensor], perm: torch.Tensor) -> list[torch.Tensor]:
    """``A'[b, h, i, j] = A[b, h, perm[b, i], perm[b, j]]`` for each (B, H, N, N) tensor."""
    out = []
    for t in tensors:
        b, h, n, _ = t.shape
        rows = perm[:, None, :, None].expand(b, h, n, n)
        cols = perm[:, None, None, :].expand(b, h, n, n)
        out.append(t.gather(2, rows).gather(3, cols))
    return out


class ClipExplainer:
    """Explain image–text similarity (CLIP, or the offline LiT stand-in) on either tower.

    Args:
        model: a :class:`~attngrad.clip.model.ClipModel` (from :func:`~attngrad.clip.model.from_hf_clip`
            or :func:`~attngrad.clip.model.load_clip`).
        device: where to run; default where the model is.

    Example::

        ex = ClipExplainer.from_pretrained()          # the LiT stand-in, offline
        res = ex.explain("el1.jpg", ["a photo of a zebra", "a photo of an elephant"])
        res.maps.shape                                # (1, 2, 14, 14)
        ex.explain("el1.jpg", ["a photo of a zebra"], tower="text").token_scores(0, 0)
    """

    def __init__(self, model: ClipModel, *, device: torch.device | str | None = None):
        if not isinstance(model, ClipModel):
            raise AttngradError(
                f"ClipExplainer takes a ClipModel, not {type(model).__name__}; wrap a Hugging Face CLIPModel with "
                "attngrad.clip.from_hf_clip(model, tokenizer), or use ClipExplainer.from_pretrained(...)"
            )
        self.model = model.to(device) if device is not None else model

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *,
                        device: torch.device | str | None = None) -> ClipExplainer:
        """``None``: the LiT stand-in (offline); else a local ``CLIPModel`` folder or Hub name."""
        return cls(load_clip(name_or_path, device=device))

    @property
    def device(self) -> torch.device:
        return self.model.image.device

    def prepare(self, images: Images) -> tuple[torch.Tensor, list[Image.Image]]:
        """Images (paths, PIL images, or a preprocessed (B, 3, H, W) tensor) -> model input and display images."""
        pre = self.model.image.preprocessor
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.ndim == 3 else images
            if batch.ndim != 4:
                raise AttngradError(f"an image tensor must be (B, 3, H, W), not {tuple(images.shape)}")
            unit = pre.denormalize(batch.detach().float().cpu()) / pre.rescale / 255.0
            arrays = (unit.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            return batch.to(self.device), [Image.fromarray(a) for a in arrays]
        items: Sequence[ImageLike] = [images] if isinstance(images, (str, Path, Image.Image)) else images  # type: ignore[assignment]
        rgb = [load_image(im) for im in items]
        if not rgb:
            raise AttngradError("no images given")
        return pre(rgb).to(self.device), [pre.geometry(im) for im in rgb]

    @torch.no_grad()
    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.image.forward(pixel_values).logits, dim=-1)

    @torch.no_grad()
    def embed_texts(self, batch: TextBatch) -> torch.Tensor:
        text = self.model.text
        return F.normalize(text.forward(text.embed(batch.input_ids), batch).logits, dim=-1)

    def similarity(self, images: Images, texts: str | Sequence[str]) -> torch.Tensor:
        """Cosine similarity (B, K) of every image with every text."""
        pixel_values, _ = self.prepare(images)
        return self.embed_images(pixel_values) @ self.embed_texts(self.model.text.encode(texts)).T

    def zero_shot(self, images: Images, texts: str | Sequence[str]) -> torch.Tensor:
        """Probabilities (B, K) over the texts: ``softmax(logit_scale * cos)``, CLIP's zero-shot classifier."""
        return (self.model.logit_scale * self.similarity(images, texts)).softmax(dim=-1)

    # ------------------------------------------------------------------ explaining

    def _methods(self, methods: Sequence[str | Method], tower: str, start_layer: int) -> list[Method]:
        if tower not in TOWERS:
            raise AttngradError(f"tower must be 'image' or 'text', not {tower!r}")
        instances = [clip_method(m, start_layer=start_layer) for m in methods]
        if not instances:
            raise AttngradError("no methods given")
        for m in instances:
            if not isinstance(m, (Rollout, RawAttention, AttentionGradCAM, _Eclip, IntegratedGradients)):
                raise AttngradError(f"method {m.name!r} is not defined for CLIP towers; choose from {', '.join(CLIP_METHODS)}")
            if tower == "text" and isinstance(m, AttentionGradCAM):
                raise AttngradError(
                    "attn_gradcam averages gradients over every column, padding included, so a padded text would not "
                    "get its own map; on the text tower use complete, gae, absolute, rollout, raw_attention or the eclip pair"
                )
            if tower == "text" and self.model.text.read == "pooled" and not isinstance(m, (Rollout, IntegratedGradients)):
                raise AttngradError(
                    f"method {m.name!r} reads one token's row, but this text tower mean-pools every token; "
                    "use complete, gae, absolute, rollout or rollout_eq1"
                )
        return instances

    def explain_methods(
        self,
        images: Images,
        texts: str | Sequence[str],
        methods: Sequence[str | Method],
        *,
        tower: str = "image",
        loss: LossLike = "logit",
        contrast: int | str | None = None,
        start_layer: int = 0,
    ) -> dict[str, ClipExplanation]:
        """Several methods from one forward + backward pass; returns ``{name: ClipExplanation}``.

        ``loss`` acts on each image's cosines with the K texts (``logit``: the pair's cosine); a
        two-class loss (``normdiff``, ``diff``, ``ratio``) compares each text with ``contrast``
        (one of the texts, by index or text) and applies to the image tower.
        """
        instances = self._methods(methods, tower, start_layer)
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = self.model.text.encode(texts)
        pixel_values, shown = self.prepare(images)
        loss_fn = get_loss(loss)
        contrast_index = self._contrast(contrast, texts, loss_fn, tower)
        b, k = pixel_values.shape[0], len(texts)
        if tower == "image":
            view = _TowerView(self.model.image, self.embed_texts(batch), texts)
            inputs = pixel_values.repeat_interleave(k, dim=0)
            targets = torch.arange(k).repeat(b)
            # the contrast text against itself is cos - cos = 0: not traced (the core refuses it), its map is 0
            keep = torch.ones(b * k, dtype=torch.bool) if contrast_index is None else targets != contrast_index
            rows = int(keep.sum())
            trace = self._trace(view, inputs[keep.to(inputs.device)], targets[keep], loss, contrast_index,
                                instances, "cls")
            n = trace.attentions[0].shape[-1]
            trace.extras["positions"] = torch.zeros(rows, dtype=torch.long, device=self.device)
            trace.extras["columns"] = (torch.arange(n, device=self.device) >= 1).expand(rows, n)
            maps = {}
            for m in instances:
                kept = m(trace)
                full = kept.new_zeros(b * k, *kept.shape[1:])
                full[keep.to(kept.device)] = kept
                maps[m.name] = full.reshape(b, k, *trace.grid)
            per_image = trace.logits.reshape(b, rows // b, k)[:, 0]  # each row holds its image's cosines with every text
            similarity = per_image.reshape(b, k)
        else:
            maps, similarity = self._text_maps(instances, batch, pixel_values, loss, b, k)
        loss_name = loss_fn.name
        return {
            name: ClipExplanation(m, similarity.detach(), tower, name, loss_name, texts, batch, shown,
                                  self.model.name, self.model.stand_in)
            for name, m in maps.items()
        }

    def explain(
        self,
        images: Images,
        texts: str | Sequence[str],
        *,
        method: str | Method = "complete",
        tower: str = "image",
        loss: LossLike = "logit",
        contrast: int | str | None = None,
        start_layer: int = 0,
    ) -> ClipExplanation:
        """Explain ``cos(image, text)`` for every image and text with one method (default ``complete``).

        Args:
            images: paths, PIL images, or a preprocessed (B, 3, H, W) tensor.
            texts: one text or K texts (e.g. zero-shot prompts).
            method: one of :data:`CLIP_METHODS` or a :class:`Method`.
            tower: ``"image"`` (maps on the patch grid) or ``"text"`` (token scores).
            loss, contrast, start_layer: see :meth:`explain_methods`.
        """
        (result,) = self.explain_methods(images, texts, [method], tower=tower, loss=loss, contrast=contrast,
                                         start_layer=start_layer).values()
        return result

    def _contrast(self, contrast, texts: list[str], loss_fn, tower: str) -> int | None:
        if not loss_fn.needs_contrast:
            if contrast is not None:
                raise AttngradError(f"loss {loss_fn.name!r} uses one text; a contrast applies to normdiff, diff or ratio")
            return None
        if tower != "image":
            raise AttngradError("a two-text loss compares texts, so it explains the image tower; use tower='image'")
        if contrast is None:
            raise AttngradError(f"loss {loss_fn.name!r} compares two texts: give contrast (a text, or its index)")
        if len(texts) < 2:
            raise AttngradError(f"loss {loss_fn.name!r} compares two texts: give at least two texts")
        if isinstance(contrast, int) and 0 <= contrast < len(texts):
            return contrast
        if isinstance(contrast, str) and contrast in texts:
            return texts.index(contrast)
        raise AttngradError(f"contrast {contrast!r} is not one of the texts: {', '.join(map(repr, texts))}")

    def _trace(self, view, inputs, targets, loss, contrast, methods, token) -> Trace:
        contrasts = None if contrast is None else torch.full_like(targets, contrast)
        return Explainer(view).trace(inputs, target=targets.to(self.device), loss=loss,
                                     contrast=None if contrasts is None else contrasts.to(self.device),
                                     methods=methods, token=token)

    def _text_maps(self, methods, batch: TextBatch, pixel_values, loss, b: int, k: int):
        """Text-tower maps (B, K, N): rows are (text k, image b), text-major."""
        text = self.model.text
        rows = batch.repeat(b)  # text k's copies for images 0..b-1, text after text
        view = _TowerView(text, self.embed_images(pixel_values), [f"image {i}" for i in range(b)], rows)
        targets = torch.arange(b).repeat(k)
        pooled = text.read == "pooled"
        trace = self._trace(view, text.embed(rows.input_ids), targets, loss, None, methods,
                            "pooled" if pooled else "cls")
        content = rows.content.to(trace.attentions[0].dtype)
        if pooled:
            real = rows.attention_mask.to(trace.attentions[0].dtype)
            keep = real[:, None, :, None]
            trace = dataclasses.replace(trace, attentions=[a * keep for a in trace.attentions],
                                        gradients=None if trace.gradients is None else [g * keep for g in trace.gradients])
        else:
            trace.extras["positions"] = rows.positions
            trace.extras["columns"] = rows.content
            n = rows.input_ids.shape[1]
            perm = torch.arange(n, device=self.device).repeat(b * k, 1)
            idx = torch.arange(b * k, device=self.device)
            perm[idx, 0] = rows.positions
            perm[idx, rows.positions] = 0
            swapped = dataclasses.replace(
                trace, attentions=_swap_first(trace.attentions, perm),
                gradients=None if trace.gradients is None else _swap_first(trace.gradients, perm))
        maps = {}
        for m in methods:
            if pooled and isinstance(m, IntegratedGradients):
                scores = m.scores(trace)
            elif pooled:
                scores = m.scores(trace)
                real = rows.attention_mask.to(scores.dtype)
                scores = (scores - real) / real.sum(dim=1, keepdim=True)
            elif isinstance(m, (_Eclip, IntegratedGradients)):  # token scores of their own, not a row read
                scores = m.scores(trace)
            else:
                scores = m.token_scores(swapped).gather(1, perm)
            scores = scores * content
            maps[m.name] = scores.reshape(k, b, -1).transpose(0, 1)
        idx = torch.arange(b * k, device=trace.logits.device)
        similarity = trace.logits[idx, targets.to(trace.logits.device)].reshape(k, b).T
        return maps, similarity
