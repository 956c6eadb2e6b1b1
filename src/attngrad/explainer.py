"""The user-facing API: ``Explainer(model).explain(images, target, method, loss)``.

One forward and one backward pass per batch serve every requested method
(Cui, Fan & Chen; method.md). Tensors stay on the model's device.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import AttngradError
from .io import ImageLike, load_image
from .losses import LossLike, get_loss
from .methods import Method, Trace, get_method
from .models import ModelAdapter, load_model, wrap_model
from .targets import TargetSpec, resolve_targets

Images = Union[ImageLike, Sequence[ImageLike], torch.Tensor]


@dataclass
class Prediction:
    """One of an image's top-k classes."""

    index: int
    label: str
    probability: float
    logit: float


class MapResult:
    """What image and text results share: ``maps`` (B, ...), ``targets``, ``contrasts``, ``labels``."""

    maps: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    labels: list[str]

    @property
    def target_names(self) -> list[str]:
        return [self.labels[i] for i in self.targets.tolist()]

    @property
    def contrast_names(self) -> list[str] | None:
        return None if self.contrasts is None else [self.labels[i] for i in self.contrasts.tolist()]

    def normalized(self) -> torch.Tensor:
        """``S / max|S|`` per item: values in [-1, 1], sign kept (method.md, "Display")."""
        peak = self.maps.abs().flatten(1).amax(dim=1).clamp(min=torch.finfo(self.maps.dtype).tiny)
        return self.maps / peak.view(-1, *[1] * (self.maps.ndim - 1))

    def numpy(self) -> np.ndarray:
        return self.maps.detach().cpu().numpy()


@dataclass
class Explanation(MapResult):
    """Maps for a batch, with what produced them.

    Attributes:
        maps: (B, gh, gw) raw scores on the patch grid (unnormalised; sign kept).
        logits: (B, C).
        targets: (B,) explained classes; ``contrasts`` (B,) for two-class losses, else ``None``.
        method, loss: names.
        labels: the model's class names.
        images: the images as the model saw them (resized/cropped RGB), for display.
    """

    maps: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    contrasts: torch.Tensor | None
    method: str
    loss: str
    labels: list[str]
    images: list[Image.Image]



class Explainer:
    """Explain a Vision Transformer's predictions from its attention maps and their gradients.

    Args:
        model: a Hugging Face image classifier, a timm ViT, or a :class:`ModelAdapter`.
        device: where to run (``"cpu"``, ``"cuda"``, ...); default: where the model is.

    Example::

        ex = Explainer.from_pretrained("google/vit-base-patch16-224")
        res = ex.explain("el1.jpg", target="zebra", method="complete")
        res.maps  # (1, 14, 14)
    """

    def __init__(self, model: nn.Module | ModelAdapter, device: torch.device | str | None = None):
        self.adapter = wrap_model(model)
        if device is not None:
            self.adapter.model.to(device)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path | None = None, device: torch.device | str | None = None
    ) -> "Explainer":
        """Load a Hugging Face folder or Hub name (``None``: the shipped ViT-Ti; ``"timm:NAME"``: timm)."""
        return cls(load_model(name_or_path, device=device))

    @classmethod
    def from_timm(
        cls, name: str, checkpoint: str | Path | None = None, device: torch.device | str | None = None
    ) -> "Explainer":
        """``timm.create_model(name)`` with weights from ``checkpoint``."""
        return cls(load_model(f"timm:{name}", device=device, checkpoint=checkpoint))

    @property
    def labels(self) -> list[str]:
        return self.adapter.labels

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def prepare(self, images: Images) -> tuple[torch.Tensor, list[Image.Image]]:
        """Images (paths, PIL images, or a preprocessed (B, 3, H, W) tensor) -> model input and display images."""
        pre = self.adapter.preprocessor
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.ndim == 3 else images
            if batch.ndim != 4:
                raise AttngradError(f"an image tensor must be (B, 3, H, W), not {tuple(images.shape)}")
            unit = pre.denormalize(batch.detach().float().cpu()) / pre.rescale / 255.0
            arrays = (unit.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            return batch.to(self.device), [Image.fromarray(a) for a in arrays]
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        rgb = [load_image(im) for im in images]
        if not rgb:
            raise AttngradError("no images given")
        return pre(rgb).to(self.device), [pre.geometry(im) for im in rgb]

    def predict(self, images: Images, k: int = 5) -> list[list[Prediction]]:
        """Top-k classes per image, with probabilities and logits."""
        pixel_values, _ = self.prepare(images)
        with torch.no_grad():
            logits = self.adapter.forward(pixel_values).logits
        return self.top_k(logits, k)

    def top_k(self, logits: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
        probs = logits.detach().float().softmax(dim=-1)
        top = probs.topk(min(k, probs.shape[1]), dim=-1)
        return [
            [Prediction(i, self.labels[i], p, float(logits[b, i])) for p, i in zip(ps.tolist(), ix.tolist())]
            for b, (ps, ix) in enumerate(zip(top.values, top.indices))
        ]

    def trace(
        self,
        pixel_values: torch.Tensor,
        target: TargetSpec = None,
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        methods: Sequence[Method] = (),
        token: int | str = "cls",
    ) -> Trace:
        """One forward pass, and one backward pass of the loss to every layer's attention maps."""
        loss_fn = get_loss(loss)
        needs_grad = any(m.needs_gradients for m in methods) or not methods
        extras: dict[str, Any] = {}
        with ExitStack() as stack:
            for method in methods:
                stack.enter_context(method.capture(self.adapter, extras))
            stack.enter_context(torch.enable_grad() if needs_grad else torch.no_grad())
            inputs = pixel_values.detach().requires_grad_(needs_grad)
            out = self.adapter.forward(inputs)
            targets = resolve_targets(target, out.logits, self.labels)
            contrasts = None
            if loss_fn.needs_contrast:
                if contrast is None:
                    raise AttngradError(f"loss {loss_fn.name!r} compares two classes: give a contrast class (e.g. 'top2')")
                contrasts = resolve_targets(contrast, out.logits, self.labels)
            gradients = None
            if needs_grad:
                values = loss_fn(out.logits, targets, contrasts)
                gradients = list(torch.autograd.grad(values.sum(), out.attentions, retain_graph=bool(extras)))
                if not torch.isfinite(values).all() or not all(torch.isfinite(g).all() for g in gradients):
                    raise AttngradError(
                        f"loss {loss_fn.name!r} gave NaN or infinite gradients (e.g. a ratio or normalised "
                        "difference whose denominator logit is 0); choose another loss or target"
                    )
        return Trace(
            pixel_values=pixel_values,
            logits=out.logits.detach(),
            attentions=[a.detach() for a in out.attentions],
            gradients=gradients,
            targets=targets,
            contrasts=contrasts,
            token=self.adapter.token_index(token),
            num_prefix_tokens=self.adapter.num_prefix_tokens,
            grid=self.adapter.grid(pixel_values),
            adapter=self.adapter,
            extras=extras,
        )

    def explain_methods(
        self,
        images: Images,
        methods: Sequence[str | Method],
        target: TargetSpec = None,
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        start_layer: int = 0,
        token: int | str = "cls",
        guide: ImageLike | None = None,
        layout: str = "left-right",
        gallery: str | Path | None = None,
    ) -> dict[str, Explanation]:
        """Several methods from one shared forward + backward pass; returns ``{name: Explanation}``.

        With ``guide`` (an image, or a class name looked up in ``gallery``), each image is explained
        stitched beside the guide (paper, external guidance); see
        :func:`attngrad.experiments.guidance.explain_guided`.
        """
        if guide is not None:
            from .experiments.guidance import explain_guided

            return explain_guided(
                self, images, guide, methods, target, loss, contrast, start_layer, token, layout, gallery
            )
        pixel_values, shown = self.prepare(images)
        instances = [get_method(m, start_layer=start_layer) for m in methods]
        trace = self.trace(pixel_values, target, loss, contrast, instances, token)
        loss_name = get_loss(loss).name
        return {
            m.name: Explanation(
                maps=m(trace),
                logits=trace.logits,
                targets=trace.targets,
                contrasts=trace.contrasts,
                method=m.name,
                loss=loss_name,
                labels=self.labels,
                images=shown,
            )
            for m in instances
        }

    def explain(
        self,
        images: Images,
        target: TargetSpec = None,
        method: str | Method = "complete",
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        start_layer: int = 0,
        token: int | str = "cls",
        guide: ImageLike | None = None,
        layout: str = "left-right",
        gallery: str | Path | None = None,
    ) -> Explanation:
        """Explain a batch with one method (default ``complete``, the paper's eq. 5).

        Args:
            images: paths, PIL images, or a preprocessed (B, 3, H, W) tensor.
            target: class index, class name, ``"top1"``..``"topk"`` (default ``"top1"``), or one per image.
            method: a registered name (:data:`attngrad.methods.METHODS`) or a :class:`Method`.
            loss: ``logit`` (eq. 7), ``normdiff`` (eq. 8), ``diff``, ``ratio``, or a callable.
            contrast: the second class of a two-class loss, in the same forms as ``target``.
            start_layer: first layer of the rollout product.
            token: special token whose row is read (``"cls"`` or ``"distillation"``, or its index).
            guide: external guidance (paper, experiment 3): an image, or a class name looked up in
                ``gallery``, stitched beside each image (``layout``); the map of the original's
                region is returned (a :class:`~attngrad.experiments.guidance.GuidedExplanation`).
        """
        (result,) = self.explain_methods(
            images, [method], target, loss, contrast, start_layer, token, guide, layout, gallery
        ).values()
        return result
