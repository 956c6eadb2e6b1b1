"""The user-facing API: ``Explainer(model).explain(images, target=..., method=..., loss=...)``.

One forward and one backward pass per batch serve every requested method
(Cui, Fan & Chen; method.md). Tensors stay on the model's device. Display images
are built only when a result's ``images`` is read (:class:`~attngrad.results.DisplayImages`).
"""

from __future__ import annotations

import numbers
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch
from PIL import Image
from torch import nn

from .errors import AttngradError
from .io import ImageLike, load_image
from .losses import LossLike, check_contrast, get_loss
from .methods import METHODS, Method, Trace, method_options
from .methods.base import NOT_COMPUTED
from .models import ModelAdapter, check_device, load_model, wrap_model
from .results import DisplayImages, Explanation, MapResult, Prediction
from .stitch import explain_guided
from .targets import TargetSpec, resolve_targets

__all__ = ["Explainer", "Explanation", "Images", "MapResult", "Prediction"]

Images = Union[ImageLike, Sequence[ImageLike], torch.Tensor]


def _instances(methods: Sequence[str | Method], start_layer: int | None,
               options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Method]:
    """Method instances with their ``options`` (``{name: {option: value}}``); ``start_layer`` goes to every
    named method that takes it (an error if none does)."""
    from .methods.options import check_options, instance

    if start_layer is not None and (isinstance(start_layer, bool) or not isinstance(start_layer, numbers.Integral)):
        raise AttngradError(f"start_layer must be a whole number (a layer index counted from 0), not {start_layer!r}",
                            field="start_layer")
    options = check_options(options, methods)
    out, took = [], False
    for m in methods:
        takes = start_layer is not None and isinstance(m, str) and "start_layer" in method_options(METHODS.get(m, Method))
        out.append(instance(m, options.get(m) if isinstance(m, str) else None, start_layer if takes else None))
        took = took or takes
    if start_layer not in (None, 0) and not took:  # 0 (all layers) is what every method does anyway
        named = ", ".join(m if isinstance(m, str) else m.name for m in methods)
        raise AttngradError(f"start_layer applies to the rollout family and tattr; none of {named} takes it")
    return out


class Explainer:
    """Explain a Transformer classifier's predictions from its attention maps and their gradients.

    Args:
        model: a Hugging Face image classifier, a timm ViT, or a :class:`ModelAdapter`
            (any registered family; see docs/adding-a-model-family.md).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); default: where the model is.

    Example::

        ex = Explainer.from_pretrained("google/vit-base-patch16-224")
        res = ex.explain("el1.jpg", target="zebra", method="complete")
        res.maps  # (1, 14, 14)
    """

    def __init__(self, model: nn.Module | ModelAdapter, *, device: torch.device | str | None = None):
        dev = check_device(device)
        self.adapter = wrap_model(model)
        if dev is not None:
            self.adapter.model.to(dev)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path | None = None, *, device: torch.device | str | None = None
    ) -> "Explainer":
        """Load a Hugging Face folder or Hub name (``None``: the shipped ViT-Ti; ``"timm:NAME"``: timm)."""
        return cls(load_model(name_or_path, device=device))

    @classmethod
    def from_timm(
        cls, name: str, checkpoint: str | Path | None = None, *, device: torch.device | str | None = None
    ) -> "Explainer":
        """``timm.create_model(name)`` with weights from ``checkpoint`` (required)."""
        return cls(load_model(f"timm:{name}", device=device, checkpoint=checkpoint))

    @property
    def labels(self) -> list[str]:
        return self.adapter.labels

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def prepare(self, images: Images) -> tuple[torch.Tensor, DisplayImages]:
        """Images (paths, PIL images, or a preprocessed (B, 3, H, W) tensor) -> model input and display images.

        The display images (RGB, as the model sees them) are built on first access.
        """
        pre = getattr(self.adapter, "preprocessor", None)
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.ndim == 3 else images
            if batch.ndim != 4:
                raise AttngradError(f"an image tensor must be (B, 3, H, W), not {tuple(images.shape)}")
            if pre is None:
                return batch.to(self.device), DisplayImages([])
            snapshot = batch.detach().clone()  # later in-place changes to the caller's tensor do not leak in

            def show() -> list[Image.Image]:
                unit = pre.denormalize(snapshot.float().cpu()) / pre.rescale / 255.0
                arrays = (unit.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
                return [Image.fromarray(a) for a in arrays]

            return batch.to(self.device), DisplayImages(show)
        if pre is None:
            raise AttngradError(
                f"{type(self.adapter).__name__} takes tensors, not images; pass the model's input tensor"
            )
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        rgb = [load_image(im) for im in images]
        if not rgb:
            raise AttngradError("no images given")
        return pre(rgb).to(self.device), DisplayImages(lambda: [pre.geometry(im) for im in rgb])

    def predict(self, images: Images, *, k: int = 5) -> list[list[Prediction]]:
        """Top-k classes per image, with probabilities and logits."""
        pixel_values, _ = self.prepare(images)
        with torch.no_grad():
            logits = self.adapter.forward(pixel_values).logits
        return self.top_k(logits, k=k)

    def top_k(self, logits: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
        if k < 1:
            raise AttngradError(f"k must be at least 1, not {k}")
        probs = logits.detach().float().softmax(dim=-1)
        top = probs.topk(min(k, probs.shape[1]), dim=-1)
        return [
            [Prediction(i, self.labels[i], p, float(logits[b, i])) for p, i in zip(ps.tolist(), ix.tolist())]
            for b, (ps, ix) in enumerate(zip(top.values, top.indices))
        ]

    def trace(
        self,
        images: Images,
        *,
        target: TargetSpec = None,
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        methods: Sequence[Method] = (),
        token: int | str = "cls",
    ) -> Trace:
        """One forward pass, and one backward pass of the loss to every layer's attention maps.

        ``images``: a model-input tensor (used as is), or paths / PIL images (preprocessed).

        Raises:
            AttngradError: a two-class loss whose contrast equals the target (its map would be
                all zero), among the other input checks.
        """
        pixel_values = images if isinstance(images, torch.Tensor) else self.prepare(images)[0]
        loss_fn = get_loss(loss)
        check_contrast(loss_fn, contrast)
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
            if loss_fn.needs_contrast or contrast is not None:  # (a callable of three arguments reads it too)
                if contrast is None:
                    raise AttngradError(f"loss {loss_fn.name!r} compares two classes: give a contrast class (e.g. 'top2')")
                contrasts = resolve_targets(contrast, out.logits, self.labels)
                same = (contrasts == targets).nonzero().flatten().tolist()
                if same:
                    name = self.labels[int(targets[same[0]])]
                    raise AttngradError(
                        f"the contrast equals the target ({name!r}) for item {same[0] + 1}: loss {loss_fn.name!r} "
                        "would give an all-zero map; choose another contrast class (e.g. 'top2')"
                    )
            gradients = None
            if needs_grad:
                values = loss_fn(out.logits, targets, contrasts)
                # the backward pass stops at the lowest layer a method reads (:meth:`Method.gradient_start`)
                layers = len(out.attentions)
                lowest = min((m.gradient_start(layers) for m in methods if m.needs_gradients), default=0)
                lowest = min(max(lowest, 0), layers - 1)  # a start out of range is refused by its method
                found = torch.autograd.grad(values.sum(), out.attentions[lowest:], retain_graph=bool(extras))
                gradients = [NOT_COMPUTED] * lowest + list(found)
                sums = torch.stack([values.sum(), *(g.sum() for g in found)])  # NaN/inf anywhere -> non-finite sum
                if not bool(torch.isfinite(sums).all()):
                    raise AttngradError(
                        f"loss {loss_fn.name!r} gave NaN or infinite gradients (e.g. a ratio or normalised "
                        "difference whose denominator logit is 0); choose another loss or target"
                    )
        extras["loss"] = loss_fn  # methods that run passes of their own explain the same loss (ig)
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
        *,
        target: TargetSpec = None,
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        start_layer: int | None = None,
        token: int | str = "cls",
        guide: ImageLike | None = None,
        layout: str = "left-right",
        gallery: str | Path | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, Explanation]:
        """Several methods from one shared forward + backward pass; returns ``{name: Explanation}``.

        ``options`` gives named methods their options, ``{"ig": {"layer": "hidden:3", "steps": 8}}``
        (the command line's ``--method-option ig.layer=hidden:3 --method-option ig.steps=8``).

        ``start_layer`` goes to the methods that take it (the rollout family, tattr); ``None``
        keeps each method's default. With ``guide`` (an image, or a class name looked up in
        ``gallery``), each image is explained stitched beside the guide (paper, external
        guidance); see :func:`attngrad.stitch.explain_guided`.
        """
        if guide is not None:
            if options:  # named methods with their options become instances (start_layer goes into them)
                methods, start_layer = _instances(methods, start_layer, options), None
            return dict(explain_guided(
                self, images, guide, methods, target=target, loss=loss, contrast=contrast, start_layer=start_layer,
                token=token, layout=layout, gallery=gallery,
            ))
        if not methods:
            raise AttngradError("no methods given; name at least one (e.g. complete)")
        pixel_values, shown = self.prepare(images)
        instances = _instances(methods, start_layer, options)
        trace = self.trace(pixel_values, target=target, loss=loss, contrast=contrast, methods=instances, token=token)
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
        *,
        target: TargetSpec = None,
        method: str | Method = "complete",
        loss: LossLike = "logit",
        contrast: TargetSpec = None,
        start_layer: int | None = None,
        token: int | str = "cls",
        guide: ImageLike | None = None,
        layout: str = "left-right",
        gallery: str | Path | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Explanation:
        """Explain a batch with one method (default ``complete``, the paper's eq. 5).

        Args:
            images: paths, PIL images, or a preprocessed (B, 3, H, W) tensor.
            target: class index, class name, ``"top1"``..``"topk"`` (default ``"top1"``), or one per image.
            method: a registered name (:data:`attngrad.methods.METHODS`) or a :class:`Method`.
            loss: ``logit`` (eq. 7), ``normdiff`` (eq. 8), ``diff``, ``ratio``, or a callable.
            contrast: the second class of a two-class loss, in the same forms as ``target``.
            start_layer: first layer of the rollout product (default: the method's, 0).
            token: special token whose row is read (``"cls"`` or ``"distillation"``, or its index).
            guide: external guidance (paper, experiment 3): an image, or a class name looked up in
                ``gallery``, stitched beside each image (``layout``); the map of the original's
                region is returned (a :class:`~attngrad.stitch.GuidedExplanation`).
            options: the method's options (``{"layer": "hidden:3", "steps": 8}`` for ``ig``).
        """
        (result,) = self.explain_methods(
            images, [method], target=target, loss=loss, contrast=contrast, start_layer=start_layer, token=token,
            guide=guide, layout=layout, gallery=gallery,
            options=None if options is None else {method if isinstance(method, str) else method.name: options},
        ).values()
        return result
