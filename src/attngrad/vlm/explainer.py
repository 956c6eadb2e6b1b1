"""Why did the vision–language model say "zebra"? ``VLMExplainer`` for LLaVA-style models.

One forward and one backward pass per batch give every language-model layer's maps ``A(l)`` and
gradients ``∇A(l)``, and every vision-encoder layer's. With the rollout family's weightings
(:mod:`attngrad.methods.rollout`: ``complete`` = ``∇A ⊙ A`` signed, ``gae`` its positive part,
``absolute`` = ``|∇A| ⊙ A``, ``rollout`` = ``A`` with rows renormalised) two readings are offered:

- ``reading="language"`` (a): the rollout row ``e_last · (I + M(L))···(I + M(1))`` over the
  language model's layers, read at the predicting (last) position; its image-token columns are
  the patch map, its text columns the prompt tokens' scores.
- ``reading="vision"`` (b): the same image-token relevance carried back through the vision
  encoder's own rollout ``R_v = (I + M_v(L_v))···(I + M_v(1))`` over the layers that shape the
  image features: patch ``p`` gets ``Σ_k r[k] · R_v[t_k, p]``, ``t_k`` the vision token behind
  image token ``k``. This composes the two attention stacks (information from the two sources
  meeting in one attention: the heterogeneous case).

``raw_attention`` reads the last language layer's head-mean row (reading (b) composes it with the
vision encoder's last used layer, head-mean); ``grad_x_input`` is ``Σ_d x ⊙ ∇x`` on the language
model's input embeddings (image tokens included) for (a) and on the pixels, summed per patch, for
(b); ``random`` is uniform noise seeded by the prompt's ids and the pixels.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

from ..errors import AttngradError, refuse_unknown_token, warn_first_token
from ..losses import LossLike, get_loss
from ..methods.rollout import absolute_gradient, plain, positive_gradient, rollout, signed_gradient
from ..results import Result, Spot
from .model import VLMAdapter, VLMBatch

#: method -> (weighting of each layer's map, needs gradients, rows renormalised)
_ROLLOUTS = {
    "complete": (signed_gradient, True, False),
    "gae": (positive_gradient, True, False),
    "absolute": (absolute_gradient, True, False),
    "rollout": (plain, False, True),
}
VLM_METHODS = ("complete", "gae", "absolute", "rollout", "raw_attention", "grad_x_input", "random")
SIGNED = {"complete", "grad_x_input"}
READINGS = ("language", "vision")
TokenSpec = Union[None, int, str]
_TOPK = re.compile(r"^top-?(\d+)$", re.IGNORECASE)


@dataclass
class VLMExplanation(Result):
    """Maps for a batch of (image, prompt) pairs: what the next-token prediction rests on.

    Attributes:
        maps: (B, gh, gw) signed scores over each image's patch grid.
        text_scores: (B, N) scores over the left-padded prompt positions (0 on padding and image tokens).
        tokens: per prompt, its real tokens as text (each image token shown as ``<image>``).
        lengths: real tokens per prompt (at the end of each row of ``text_scores``).
        logits: (B, V) next-token logits; targets, contrasts: (B,) token ids explained.
        method, loss, reading: names.

    As a :class:`~attngrad.results.Result`: an item is an (image, prompt) pair, ``maps`` its image's
    patch grid and :meth:`scores` / :meth:`position_names` / :meth:`top` read that grid; :meth:`top_tokens`
    ranks the prompt's text tokens the same way.
    """

    maps: torch.Tensor
    text_scores: torch.Tensor
    tokens: list[list[str]]
    lengths: list[int]
    logits: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    method: str
    loss: str
    reading: str
    target_text: list[str]

    @property
    def signed(self) -> bool:
        return self.method in SIGNED

    def normalized(self) -> torch.Tensor:
        """Patch maps divided by their largest magnitude (signed: in [-1, 1])."""
        scale = self.maps.flatten(1).abs().amax(dim=1).clamp(min=1e-12)
        return self.maps / scale[:, None, None]

    def token_scores(self, index: int) -> list[tuple[str, float]]:
        """``(token, score)`` over prompt ``index``'s real tokens, image tokens included (score 0 there)."""
        n = self.lengths[index]
        return list(zip(self.tokens[index], self.text_scores[index, -n:].tolist()))

    @property
    def grid(self) -> tuple[int, int]:
        return (self.maps.shape[-2], self.maps.shape[-1])

    def top_tokens(self, index: int, k: int = 5) -> list[Spot]:
        """The ``k`` highest-scored text tokens of prompt ``index``, best first (ties: the earlier token), image
        tokens left out; ``position`` indexes the prompt's real tokens (``tokens[index]``). The patches: :meth:`top`."""
        pairs = [(i, t, s) for i, (t, s) in enumerate(self.token_scores(index)) if t != "<image>"]
        return [Spot(i, t, s) for i, t, s in sorted(pairs, key=lambda p: (-p[2], p[0]))[: max(k, 0)]]


class VLMExplainer:
    """Explain a LLaVA-style model's next token over the image's patches and the prompt's tokens.

    Example::

        vlm = VLMExplainer.from_pretrained()                 # the offline stand-in (ViT-Ti + SmolLM2 + projector)
        res = vlm.explain("el1", "What animal is this?", target=" zebra", contrast=" elephant", loss="diff")
        res.maps            # (1, 14, 14) signed patch map
    """

    def __init__(self, adapter: VLMAdapter, *, preprocess=None, batch_size: int = 8):
        self.adapter = adapter
        self.preprocess = preprocess
        if batch_size < 1:
            raise AttngradError("batch_size must be at least 1")
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *, device: str | torch.device | None = None,
                        quiet: bool = False) -> "VLMExplainer":
        """A ``LlavaForConditionalGeneration`` folder or Hub name (``None``: the offline stand-in)."""
        from .load import load_vlm

        adapter, preprocess = load_vlm(name_or_path, device=device, quiet=quiet)
        return cls(adapter, preprocess=preprocess)

    # ------------------------------------------------------------------ inputs

    def pixels(self, images) -> torch.Tensor:
        """(B, 3, H, W) pixel values from a tensor, or paths / shipped names / PIL images through the preprocessor."""
        if isinstance(images, torch.Tensor):
            return images if images.dim() == 4 else images[None]
        if self.preprocess is None:
            raise AttngradError("this model has no image preprocessor; pass pixel values as a (B, 3, H, W) tensor")
        from ..io import load_image

        items = [images] if isinstance(images, (str, Path)) or hasattr(images, "convert") else list(images)
        return self.preprocess([load_image(i) for i in items])

    def _token(self, spec, logits: torch.Tensor, what: str) -> torch.Tensor:
        vocab = logits.shape[1]
        if isinstance(spec, list):  # one token id per row (the generated tokens)
            return torch.tensor([int(t) for t in spec], dtype=torch.long, device=logits.device)
        if spec is None:
            spec = "top1"
        if isinstance(spec, bool) or not isinstance(spec, (int, str)):
            raise AttngradError(f"{what} must be a token text, id or 'topK', not {type(spec).__name__}")
        if isinstance(spec, int):
            if not 0 <= spec < vocab:
                raise AttngradError(f"{what} token id {spec} is out of range; this model has ids 0..{vocab - 1}")
            return torch.full((logits.shape[0],), spec, dtype=torch.long, device=logits.device)
        match = _TOPK.match(spec.strip())
        if match:
            k = int(match.group(1))
            if not 1 <= k <= vocab:
                raise AttngradError(f"{what} {spec!r}: k must be between 1 (the most likely next token) and {vocab} "
                                      "(this model's vocabulary)")
            return logits.topk(k, dim=1).indices[:, k - 1]
        ids = list(self.adapter.tokenizer(spec, add_special_tokens=False)["input_ids"])
        if not ids:
            raise AttngradError(f"{what} {spec!r} tokenises to nothing; give a word (with its leading space: ' zebra')")
        refuse_unknown_token(self.adapter.tokenizer, what, spec, ids[0])
        if len(ids) > 1:
            warn_first_token(what, spec, self.adapter.token_text(ids))
        return torch.full((logits.shape[0],), int(ids[0]), dtype=torch.long, device=logits.device)

    # ------------------------------------------------------------------ explaining

    def _check(self, methods: Sequence[str], readings: Sequence[str], loss: LossLike, contrast: TokenSpec):
        for method in methods:
            if method not in VLM_METHODS:
                raise AttngradError(f"unknown method {method!r} for a vision-language model; choose from {', '.join(VLM_METHODS)}")
        for reading in readings:
            if reading not in READINGS:
                raise AttngradError(f"unknown reading {reading!r}; choose from {', '.join(READINGS)}")
        if not methods or not readings:
            raise AttngradError("give at least one method and one reading")
        loss_fn = get_loss(loss)
        if loss_fn.needs_contrast and contrast is None:
            raise AttngradError(f"loss {loss_fn.name!r} compares two tokens: give a contrast (' horse', or 'top2')")
        if contrast is not None and not loss_fn.needs_contrast:
            raise AttngradError(f"a contrast token needs a two-token loss: use loss='diff' or 'normdiff', not {loss_fn.name!r}")
        return [(m, r) for m in dict.fromkeys(methods) for r in dict.fromkeys(readings)], loss_fn

    def explain_methods(self, images, prompts: str | Sequence[str], methods: Sequence[str], *,
                        readings: Sequence[str] = ("language",), target: TokenSpec = None, contrast: TokenSpec = None,
                        loss: LossLike = "logit") -> dict[tuple[str, str], VLMExplanation]:
        """Every (method, reading) pair from one forward and one backward pass per batch: ``{(method, reading): result}``."""
        pairs, loss_fn = self._check(list(methods), list(readings), loss, contrast)
        pixels = self.pixels(images)
        texts = [prompts] * pixels.shape[0] if isinstance(prompts, str) else list(prompts)
        if len(texts) != pixels.shape[0]:
            raise AttngradError(f"{len(texts)} prompts for {pixels.shape[0]} images; give one, or one per image")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise AttngradError(f"prompt {i + 1} is empty; ask a question")
        encoded = [self.adapter.prompt_ids(t) for t in texts]
        return self._explain_ids(pixels, encoded, target, contrast, pairs, loss_fn)

    def explain(self, images, prompts: str | Sequence[str], *, target: TokenSpec = None, contrast: TokenSpec = None,
                method: str = "complete", loss: LossLike = "logit", reading: str = "language") -> VLMExplanation:
        """Explain the next token after each (image, prompt) pair with one method.

        Args:
            images: paths, shipped sample names, PIL images, or a (B, 3, H, W) tensor of pixel values.
            prompts: one question for every image, or one per image (put into the model's template).
            target: the explained token: a text (its first token, ``" zebra"``), an id, or ``"topK"``; default top1.
            contrast: the second token of ``diff`` / ``normdiff`` (refused when equal to the target).
            method: one of :data:`VLM_METHODS`; reading: ``"language"`` (a) or ``"vision"`` (b).
        """
        (res,) = self.explain_methods(images, prompts, [method], readings=[reading], target=target, contrast=contrast,
                                      loss=loss).values()
        return res

    def _explain_ids(self, pixels, encoded, target, contrast, pairs, loss_fn) -> dict:
        parts = []
        for start in range(0, len(encoded), self.batch_size):
            rows = slice(start, start + self.batch_size)
            batch = self.adapter.batch([e[0] for e in encoded[rows]], [e[1] for e in encoded[rows]])
            t = target[rows] if isinstance(target, list) else target
            _check_memory(self.adapter, *batch.input_ids.shape)
            parts.append(self._pass(pixels[rows], batch, pairs, loss_fn, t, contrast))
        width = max(len(e[0]) for e in encoded)
        targets = torch.cat([p[2] for p in parts])
        contrasts = None if contrast is None else torch.cat([p[3] for p in parts])
        logits = torch.cat([p[1] for p in parts])
        tokens = [["<image>" if i == self.adapter.image_token_id else self.adapter.token_text([i])[0] for i in e[0]]
                  for e in encoded]
        out = {}
        for method, reading in pairs:
            text = torch.cat([torch.nn.functional.pad(p[0][(method, reading)][1], (width - p[0][(method, reading)][1].shape[1], 0))
                              for p in parts])
            out[(method, reading)] = VLMExplanation(
                maps=torch.cat([p[0][(method, reading)][0] for p in parts]), text_scores=text, tokens=tokens,
                lengths=[len(e[0]) for e in encoded], logits=logits, targets=targets, contrasts=contrasts,
                method=method, loss=loss_fn.name, reading=reading, target_text=self.adapter.token_text(targets.tolist()),
            )
        return out

    def generate(self, image, prompt: str, *, max_new_tokens: int = 8) -> list[int]:
        """The greedy answer's token ids (stopping after the end-of-sequence token)."""
        if max_new_tokens < 1:
            raise AttngradError("max_new_tokens must be at least 1")
        pixels = self.pixels(image)[:1].to(self.adapter.device)
        ids, start = self.adapter.prompt_ids(prompt)
        eos = self.adapter.tokenizer.eos_token_id
        new: list[int] = []
        with torch.no_grad():
            for _ in range(max_new_tokens):  # no cache: answers are short and the code path stays the explained one
                batch = self.adapter.batch([ids + new], [start])
                nxt = int(self.adapter.forward(pixels, batch).logits[0].argmax())
                new.append(nxt)
                if nxt == eos:
                    break
        return new

    def explain_generation(self, image, prompt: str, *, max_new_tokens: int = 8, method: str = "complete",
                           loss: LossLike = "logit", contrast: TokenSpec = None,
                           reading: str = "language") -> VLMExplanation:
        """Generate greedily, then explain every generated token (row ``k`` of the result: token ``k``,
        over the image and every earlier token); the prefixes form one padded batch."""
        pairs, loss_fn = self._check([method], [reading], loss, contrast)
        if not isinstance(prompt, str) or not prompt.strip():
            raise AttngradError("the prompt is empty; ask a question")
        new = self.generate(image, prompt, max_new_tokens=max_new_tokens)
        ids, start = self.adapter.prompt_ids(prompt)
        encoded = [(ids + new[:k], start) for k in range(len(new))]
        pixels = self.pixels(image)[:1].expand(len(new), -1, -1, -1)
        (res,) = self._explain_ids(pixels, encoded, list(new), contrast, pairs, loss_fn).values()
        return res

    def _pass(self, pixels, batch: VLMBatch, pairs, loss_fn, target, contrast):
        """One forward (+ one backward when any method needs gradients) serving every ``(method, reading)`` pair."""
        a = self.adapter
        methods = {m for m, _ in pairs}
        rollouts_grad = any(m in _ROLLOUTS and _ROLLOUTS[m][1] for m in methods)
        gxi = "grad_x_input" in methods
        needs_grad = rollouts_grad or gxi
        pixels = pixels.to(a.device).detach().clone().requires_grad_(needs_grad)
        with torch.set_grad_enabled(needs_grad), a.frozen_weights():
            out = a.forward(pixels, batch, keep_embeds=gxi)
            logits = out.logits.detach()
            targets = self._token(target, logits, "target")
            contrasts = None if contrast is None else self._token(contrast, logits, "contrast")
            if contrasts is not None and bool((contrasts == targets).any()):
                raise AttngradError(f"the contrast equals the target ({a.token_text([int(targets[0])])[0]!r}); pick another token")
            per = out.vision_chunks  # tensors per vision layer (Qwen2-VL: one per image)
            vis_maps = out.vision_maps[: a.vision_depth * per]
            nt, nv = len(out.text_maps), a.vision_depth
            grads: list[torch.Tensor | None] = [None] * (nt + nv + 2)
            if needs_grad:
                value = loss_fn(out.logits, targets, contrasts).sum()
                wrt = (out.text_maps + vis_maps if rollouts_grad else []) + ([out.embeds, pixels] if gxi else [])
                if gxi and out.embeds is None:
                    raise AttngradError("the language model's input embeddings were not seen; cannot form input x gradient")
                raw = torch.autograd.grad(value, wrt, allow_unused=True)
                got = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, raw)]
                if rollouts_grad:
                    grads[: nt + nv] = got[:nt] + _join(got[nt:nt + len(vis_maps)], per)
                if gxi:
                    grads[-2:] = got[-2:]
        text_maps = [m.detach() for m in out.text_maps]
        vis_maps = _join([m.detach() for m in vis_maps], per)
        b, n = batch.input_ids.shape
        cols = torch.tensor(batch.image_start, device=a.device)[:, None] + torch.arange(a.num_image_tokens, device=a.device)
        results = {}
        for method, reading in pairs:
            row, image_rel = self._scores(method, reading, text_maps, vis_maps, grads, out, pixels, batch, cols)
            text = row.detach() * batch.attention_mask.to(row.dtype)
            text = text.scatter(1, cols, 0.0)  # the image tokens are shown on the image, not in the text
            maps = image_rel.detach()
            if not bool(torch.isfinite(maps).all()) or not bool(torch.isfinite(text).all()):
                raise AttngradError(f"method {method!r} gave a map that is not finite; check the model and the inputs")
            results[(method, reading)] = (maps.float().cpu(), text.float().cpu())
        return results, logits.float().cpu(), targets.cpu(), None if contrasts is None else contrasts.cpu()

    def _scores(self, method, reading, text_maps, vis_maps, grads, out, pixels, batch, cols):
        """``(row over the prompt positions (B, N), image relevance (B, P))`` of one method and reading."""
        a = self.adapter
        nt, nv = len(text_maps), len(vis_maps)
        b, n = batch.input_ids.shape

        def image_tokens(row):  # reading (a): one score per image token (a class token's is left out)
            rel = row.gather(1, cols)
            return (rel[:, 1:] if a.keeps_cls else rel).reshape(b, *a.token_grid)

        if method in _ROLLOUTS:
            weighting, _, renorm = _ROLLOUTS[method]
            row = rollout([weighting(m, g).mean(dim=1) for m, g in zip(text_maps, grads[:nt])], -1, renorm)
            if not renorm:
                row[:, -1] -= 1.0  # (R - I)[last, :]
            if reading == "vision":
                mixes = [weighting(m, g).mean(dim=1) for m, g in zip(vis_maps, grads[nt:nt + nv])]
                return row, _carry(row.gather(1, cols), mixes, a, renorm)
            return row, image_tokens(row)
        if method == "raw_attention":
            row = text_maps[-1].mean(dim=1)[:, -1]
            if reading == "vision":
                return row, _carry(row.gather(1, cols), [vis_maps[-1].mean(dim=1)] if vis_maps else [], a, False,
                                   identity=False)
            return row, image_tokens(row)
        if method == "grad_x_input":
            row = (out.embeds.detach() * grads[-2]).sum(dim=-1)
            if reading == "vision":
                px = (pixels.detach() * grads[-1]).sum(dim=1)  # (B, H, W)
                gh, gw = a.grid
                return row, px.reshape(b, gh, px.shape[1] // gh, gw, px.shape[2] // gw).sum(dim=(2, 4))
            return row, image_tokens(row)
        # random: uniform, seeded by the prompt's ids and the pixels
        row = torch.zeros(b, n, device=a.device)
        grid = a.grid if reading == "vision" else a.token_grid
        image_rel = torch.zeros(b, grid[0] * grid[1], device=a.device)
        for i in range(b):
            ids = batch.input_ids[i, -batch.lengths[i]:].cpu().numpy().tobytes()
            seed = zlib.crc32(ids + pixels[i].detach().float().cpu().numpy().tobytes())
            draw = torch.rand(batch.lengths[i] + image_rel.shape[1], generator=torch.Generator().manual_seed(seed))
            row[i, -batch.lengths[i]:] = draw[: batch.lengths[i]].to(a.device)
            image_rel[i] = draw[batch.lengths[i]:].to(a.device)
        return row, image_rel.reshape(b, *grid)


def _check_memory(a: VLMAdapter, rows: int, tokens: int) -> None:
    """Refuse, before the pass, a batch whose language-model maps and their gradients (both kept for every layer)
    would not fit in 90 % of the free memory (a 3,000-word prompt was killed by the system at 24 GB)."""
    from ..lm import memory

    free = memory.available_bytes(a.device)
    if free is None:
        return
    heads = int(getattr(a.text_module.config, "num_attention_heads", 1))
    size = next(a.text_module.parameters()).element_size()
    need = memory.needed_bytes(a.text_module, rows, tokens, mode="kept") + len(a.text_layers) * rows * heads * tokens**2 * size
    if need > 0.9 * free:
        raise AttngradError(f"{rows} sequence(s) of {tokens} tokens need about {need / 2**30:.1f} GB for the language "
                            f"model's maps and their gradients, more than 90 % of the {free / 2**30:.1f} GB free; shorten the "
                            "prompt or explain fewer images at a time (batch_size)")


def _join(parts: Sequence[torch.Tensor], per: int) -> list[torch.Tensor]:
    """Per-layer maps (B, H, M, M) from ``per`` consecutive parts of each layer (their batch rows)."""
    if per == 1:
        return list(parts)
    return [torch.cat(list(parts[i:i + per])) for i in range(0, len(parts), per)]


def _carry(image_rel: torch.Tensor, mixes: list[torch.Tensor], a: VLMAdapter, renorm: bool, *,
           identity: bool = True) -> torch.Tensor:
    """Image-token relevance (B, K) carried through the vision encoder's rollout to its patch grid (B, gh, gw).

    Image token ``k`` is made of the vision tokens ``a.groups[k]`` (one for LLaVA, s x s for a pixel
    shuffle); each gets an equal share of its relevance, then ``v <- v · Abar(l)`` from the last layer down.
    """
    b = image_rel.shape[0]
    m = int(a.grid[0] * a.grid[1] + a.first_patch)
    groups = a.groups.to(image_rel.device)
    share = (image_rel / groups.shape[1])[:, :, None].expand(-1, -1, groups.shape[1])
    full = torch.zeros(b, m, dtype=image_rel.dtype, device=image_rel.device)
    full = full.index_add(1, groups.flatten(), share.reshape(b, -1))
    eye = torch.eye(m, dtype=image_rel.dtype, device=image_rel.device)
    row = full[:, None, :]
    for mix in reversed(mixes):  # v <- v · Abar(l), last layer first
        abar = mix + eye if identity else mix
        if renorm:
            abar = abar / abar.sum(dim=-1, keepdim=True)
        row = torch.bmm(row, abar)
    patches = row[:, 0, a.first_patch:]
    if a.raster is not None:  # vision tokens in merge-block order (Qwen2-VL) -> reading order
        patches = patches[:, a.raster.to(patches.device)]
    return patches.reshape(b, *a.grid)
