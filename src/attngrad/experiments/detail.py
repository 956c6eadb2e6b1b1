"""Detail interpretation, or internal guidance (Cui, Fan & Chen, experiment 4; method.md item 4).

For an image whose top predictions are t1, t2, ..., tk (the paper: snail, conch,
slug), explain t1 against each runner-up with the normalised-difference loss
``(logit[t1] - logit[tj]) / logit[t1]`` (eq. 8) and the ``complete`` map: red
marks the details that push the model to t1, blue those that push it to tj.
All k-1 contrasts come from one forward + one backward pass (the image repeated
once per contrast). The figure puts a typical image of each class, from a
gallery folder, under its map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
import torch
from PIL import Image

from .. import viz
from ..errors import AttngradError
from ..gallery import class_image, resolve_gallery
from ..io import ImageLike, load_image
from ..losses import LossLike, get_loss
from ..targets import resolve_targets

if TYPE_CHECKING:
    from ..explainer import Explainer


@dataclass
class DetailResult:
    """``maps[j]``: t1 against ``contrasts[j]`` (gh, gw); ``typical``: a gallery image per class
    (t1 first), ``None`` where the gallery has none."""

    image: Image.Image
    target: str
    contrasts: list[str]
    maps: torch.Tensor
    probabilities: dict[str, float]
    loss: str
    typical: list[Image.Image | None]

    def figure_title(self, j: int) -> str:
        c = self.contrasts[j]
        return f"{self.target} vs {c}\n({self.loss}; p {self.probabilities[self.target]:.2f} / {self.probabilities[c]:.2f})"

    def save_figure(self, path: str | Path) -> Path:
        """One row: the image then each contrast's map; under each, a typical image of the class."""
        cols = 1 + len(self.contrasts)
        fig, axes = plt.subplots(2, cols, figsize=(2.5 * cols + 1.2, 5.2), squeeze=False)
        axes[0, 0].imshow(self.image)
        axes[0, 0].set_title(f"image: {self.target}\np {self.probabilities[self.target]:.2f}", fontsize=8)
        for j in range(len(self.contrasts)):
            axes[0, j + 1].imshow(viz.overlay(self.image, self.maps[j]))
            axes[0, j + 1].set_title(self.figure_title(j), fontsize=8)
        for j, (name, typical) in enumerate(zip([self.target, *self.contrasts], self.typical)):
            if typical is not None:
                axes[1, j].imshow(typical)
            axes[1, j].set_xlabel(f"typical {name}" if typical is not None else f"(no {name} in gallery)", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        viz.add_colorbar(fig, axes[0])
        return viz.save_figure(fig, path)


def _typical(name: str, labels: Sequence[str], gallery: str | os.PathLike | None) -> Image.Image | None:
    try:
        return load_image(class_image(name, labels, gallery))
    except AttngradError:
        return None


def detail_interpretation(
    explainer: "Explainer",
    image: ImageLike,
    k: int = 3,
    target: int | str | None = None,
    contrasts: Sequence[int | str] | None = None,
    loss: LossLike = "normdiff",
    gallery: str | os.PathLike | None = None,
) -> DetailResult:
    """Explain ``target`` (default: the prediction t1) against each contrast (default: t2..tk).

    Args:
        image: one image.
        k: with no ``contrasts``, compare with the next ``k - 1`` predictions (k >= 2).
        target, contrasts: classes by name or index (``--target kite --contrast "bald eagle"``).
        loss: a two-class loss: ``normdiff`` (eq. 8, default), ``diff`` or ``ratio``.
        gallery: folder of ``<wnid>_<class>.jpg`` typical images (see :mod:`attngrad.gallery`).
    """
    resolve_gallery(gallery)  # a gallery given that does not exist is an error, not "no typical images"
    if not get_loss(loss).needs_contrast:
        raise AttngradError(f"detail interpretation compares two classes; {loss!r} does not: use normdiff or diff")
    pixel_values, shown = explainer.prepare(image)
    if pixel_values.shape[0] != 1:
        raise AttngradError("detail interpretation works on one image at a time")
    with torch.no_grad():
        logits = explainer.adapter.forward(pixel_values).logits
    t1 = int(resolve_targets(target, logits, explainer.labels))
    if contrasts is None:
        if not 2 <= k <= logits.shape[1]:
            raise AttngradError(f"k must be between 2 and {logits.shape[1]}, not {k}")
        order = [i for i in logits[0].argsort(descending=True).tolist() if i != t1]
        others = order[: k - 1]
    else:
        others = [int(resolve_targets(c, logits, explainer.labels)) for c in contrasts]
        if not others:
            raise AttngradError("give at least one contrast class")
    if t1 in others:
        raise AttngradError(f"the contrast equals the target ({explainer.labels[t1]!r}); choose another class")
    batch = pixel_values.expand(len(others), -1, -1, -1)
    res = explainer.explain(batch, target=[t1] * len(others), loss=loss, contrast=others, method="complete")
    probs = logits[0].softmax(-1)
    names = [explainer.labels[i] for i in (t1, *others)]
    return DetailResult(
        image=shown[0],
        target=names[0],
        contrasts=names[1:],
        maps=res.maps,
        probabilities={n: float(probs[i]) for n, i in zip(names, (t1, *others))},
        loss=res.loss,
        typical=[_typical(n, explainer.labels, gallery) for n in names],
    )
