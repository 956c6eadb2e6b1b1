"""The model work behind the routes; everything here runs on the worker queue's thread.

Each function calls the library (``Explainer.predict``, ``Explainer.explain_methods``, the
experiments, ``TextExplainer.explain_methods``) and turns its result into JSON-ready
values (overlays through :func:`attngrad.viz.overlay`, as PNG bytes or data URLs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .. import viz
from ..explainer import Explainer, Explanation
from ..targets import resolve_targets
from .images import StoredImage
from .jobs import Job
from .render import data_url, is_signed, png, prediction_json, words_json

if TYPE_CHECKING:
    from ..text import TextExplainer, TextExplanation


def predict(explainer: Explainer, image: StoredImage, k: int) -> list[dict[str, Any]]:
    return [prediction_json(p) for p in explainer.predict(image.pixels, k=k)[0]]


def explain(
    explainer: Explainer,
    image: StoredImage,
    methods: list[str],
    *,
    target: str | None,
    contrast: str | None,
    loss: str,
    start_layer: int,
    guide: StoredImage | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    """Every method from one pass (with a guide: on the image stitched beside it, map cropped back).

    The result keeps each map raw (``raw``, float32 array) with its overlay as PNG bytes (``png``):
    the cached form, from which the route builds its answer and the downloads are served.
    """
    results = explainer.explain_methods(
        image.pixels if guide is None else image.original,  # a stitch starts from the picture
        methods,
        target=target,
        loss=loss,
        contrast=contrast,
        start_layer=start_layer,
        guide=None if guide is None else guide.original,
    )
    first: Explanation = results[methods[0]]
    labels = explainer.labels
    # with a guide: the image's own logits, not the stitch's
    logits = first.logits if guide is None else first.original_logits  # type: ignore[attr-defined]
    t = int(first.targets[0])
    c = None if first.contrasts is None else int(first.contrasts[0])
    entries = []
    for name, res in results.items():
        raw = res.maps[0].detach().float().cpu().numpy()
        entries.append({"name": name, "raw": raw, "png": png(viz.overlay(res.images[0], raw, signed=is_signed(name)))})
    return {
        "target": {"index": t, "label": labels[t], "logit": float(logits[0, t])},
        "contrast": None if c is None else {"index": c, "label": labels[c], "logit": float(logits[0, c])},
        "loss": first.loss,
        "guided": guide is not None,
        "grid": list(first.maps.shape[1:]),
        "predictions": [prediction_json(p) for p in explainer.top_k(logits, top_k)[0]],
        "methods": entries,
    }


def _class_indices(explainer: Explainer, image: StoredImage, *specs: str | None) -> list[int]:
    """Resolve class specs (names, indices, ``topK``; ``None`` = top1) against the image's own logits."""
    with torch.no_grad():
        logits = explainer.adapter.forward(image.pixels.to(explainer.device)).logits
    return [int(resolve_targets(spec, logits, explainer.labels)[0]) for spec in specs]


def _step_reporter(job: Job, steps: int) -> Callable[[int, dict[str, float]], None]:
    """An experiment's ``on_step`` callback: one job event per step (progress 5 %..90 %);
    :meth:`Job.report` raises when the client cancelled, which stops the experiment's loop."""

    def report(step: int, numbers: dict[str, float]) -> None:
        job.report(0.05 + 0.85 * step / max(steps, 1), f"step {step} of {steps}", step=step, **numbers)

    return report


def rewrite_job(
    explainer: Explainer, image: StoredImage, to: str, from_: str | None, *, eps: float, steps: int, probability: float
) -> Callable[[Job], dict[str, Any]]:
    """Class rewriting (paper, experiment 5) as a job; the result has before/after pictures, the
    ``complete`` maps of both classes on both pictures, and the numbers."""

    def work(job: Job) -> dict[str, Any]:
        from ..experiments.rewrite import (
            rewrite,  # imported when used: the experiments are optional here
        )

        to_idx, from_idx = _class_indices(explainer, image, to, from_)
        labels = explainer.labels
        job.report(0.05, f"rewriting {labels[from_idx]!r} -> {labels[to_idx]!r} (at most {steps} steps)")
        res = rewrite(
            explainer, image.original, to_idx, from_idx, eps=eps, steps=steps, probability=probability,
            on_step=_step_reporter(job, steps),
        )
        job.report(0.9, "explaining before and after")
        pictures = [res.original, res.original, res.rewritten, res.rewritten]
        maps = explainer.explain_methods(pictures, ["complete"], target=[from_idx, to_idx] * 2)["complete"]
        cells = [
            {
                "image": "before" if i < 2 else "after",
                "class": labels[int(maps.targets[i])],
                "logit": float(maps.logits[i, int(maps.targets[i])]),
                "peak": float(maps.maps[i].abs().max()),
                "overlay": data_url(png(viz.overlay(maps.images[i], maps.maps[i]))),
            }
            for i in range(4)
        ]
        return {
            "numbers": res.numbers(),
            "original": data_url(png(res.original)),
            "rewritten": data_url(png(res.rewritten)),
            "difference": data_url(png(res.difference())),
            "maps": cells,
        }

    return work


def transfer_job(
    explainer: Explainer,
    image: StoredImage,
    target: str | None,
    opposing: str | None,
    *,
    steps: int,
    lr: float,
    optimizer: str,
) -> Callable[[Job], dict[str, Any]]:
    """Attention transfer (paper, experiment 2) as a job; the result has one animation frame
    (``complete`` overlay of the target and both logits) per step."""

    def work(job: Job) -> dict[str, Any]:
        from ..experiments.transfer import attention_transfer  # imported when used

        job.report(0.05, f"descending the target logit for {steps} steps")
        res = attention_transfer(
            explainer, image.pixels, target, opposing, steps=steps, lr=lr, optimizer=optimizer,
            on_step=_step_reporter(job, steps),
        )
        job.report(0.9, "drawing the frames")
        frames = [
            {**row, "overlay": data_url(png(viz.overlay(res.image, s.map))), "peak": float(s.map.abs().max())}
            for row, s in zip(res.rows(), res.steps)
        ]
        return {
            "target": res.target,
            "opposing": res.opposing,
            "optimizer": res.optimizer,
            "lr": res.lr,
            "reproduction_error": res.reproduction_error,
            "opposing_overlay": data_url(png(viz.overlay(res.image, res.opposing_map))),
            "frames": frames,
        }

    return work


def explain_text(
    text_explainer: TextExplainer,
    text: str,
    *,
    against: str | None,
    labels: str | None,
    methods: list[str],
    loss: str,
    contrast: str | None,
) -> dict[str, Any]:
    """Every method from one pass of :meth:`attngrad.text.TextExplainer.explain_methods` (similarity
    with ``against``, zero-shot with ``labels``), as words with raw and ``S / max|S|`` scores."""
    from ..text.display import describe

    results = text_explainer.explain_methods(
        text, methods, loss=loss, contrast=contrast, against=against, labels=labels
    )
    first: TextExplanation = next(iter(results.values()))
    assert first.labels is not None  # similarity and zero-shot results both name their columns
    logits = first.logits[0].tolist()
    t = int(first.targets[0])
    return {
        "task": first.task,
        "text": text,
        "against": against,
        "loss": first.loss,
        "labels": first.labels,
        "logits": dict(zip(first.labels, logits)),
        "predicted": first.labels[int(first.logits[0].argmax())],
        "target": {"label": first.labels[t], "logit": logits[t]},
        "contrast": None if first.contrasts is None or first.contrast_names is None else first.contrast_names[0],
        "methods": [
            {
                "name": name,
                "title": describe(res, 0),
                "words": words_json(res),
                "against_words": None if res.reverse is None else words_json(res.reverse),
            }
            for name, res in results.items()
        ],
    }
