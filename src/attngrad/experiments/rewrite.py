"""Class rewriting (Cui, Fan & Chen, experiment 5; method.md "Experiments", item 5).

The image's pixels are updated with their gradient to move the prediction from
class ``a`` to class ``b`` (the paper: loss ``logit[tusker] - logit[bull mastiff]``)
while the change stays invisible.

Every iterate lives in **8-bit-valid** pixel space: the image as the model sees
it (its preprocessing geometry, e.g. 224 x 224) in units of 1/255; each step
moves every sub-pixel by one 8-bit level against the sign of the gradient
(iterative FGSM), clipped to the L-inf budget ``eps`` (a whole number of 8-bit
levels) and to [0, 255]. So the image that meets the stopping rule is exactly
the one a PNG stores, and the saved file, reloaded and preprocessed again, gives
the same logits (checked: :attr:`RewriteResult.reloaded`). The stopping rule: the
``to`` class is top-1 with probability at least ``probability``.

Batched: one forward + one backward per step for the whole batch; images that
are done stop changing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .. import viz
from ..errors import AttngradError
from ..io import ImageLike, load_image
from ..losses import LossLike, get_loss
from ..models import ImageAdapter
from ..targets import TargetSpec, resolve_targets

if TYPE_CHECKING:
    from ..explainer import Explainer, Prediction


# --------------------------------------------------------------------------- image-quality measures


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size x size), as in Wang et al. 2004."""
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004) per image, (B,).

    Gaussian window 11 x 11, sigma 1.5; ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``; local
    statistics over the window positions fully inside the image; the SSIM map is
    averaged over positions and channels. ``x``, ``y``: (B, C, H, W) in ``[0, data_range]``.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise AttngradError(f"ssim needs two (B, C, H, W) tensors of one shape, not {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    channels = x.shape[1]
    window = gaussian_window(size, sigma).to(x.device).expand(channels, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,); ``inf`` for identical images."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


# --------------------------------------------------------------------------- results


@dataclass
class RewriteResult:
    """One rewritten image and how much it changed.

    ``linf`` is in 8-bit levels (0..255); ``l2`` is the Euclidean norm of the change in
    [0, 1] pixel units over all pixels and channels; ``psnr`` (dB) and ``ssim`` compare
    the rewritten image with the original as the model sees it.
    """

    source: str
    original: Image.Image
    rewritten: Image.Image
    from_class: str
    to_class: str
    success: bool
    steps: int
    linf: int
    l2: float
    psnr: float
    ssim: float
    before: list["Prediction"]
    after: list["Prediction"]  # the rewritten image as an 8-bit picture, through the full preprocessing

    def numbers(self) -> dict:
        """JSON-ready summary (top-5 lists with probabilities and logits)."""
        return {
            "source": self.source,
            "from": self.from_class,
            "to": self.to_class,
            "success": self.success,
            "steps": self.steps,
            "linf_255": self.linf,
            "l2": self.l2,
            "psnr_db": self.psnr,
            "ssim": self.ssim,
            "before_top5": [asdict(p) for p in self.before],
            "after_top5": [asdict(p) for p in self.after],
        }

    def difference(self, amplify: float | None = None) -> Image.Image:
        """The change as a picture: ``128 + amplify * (rewritten - original)``; default amplification
        maps the largest change to the full range."""
        a = np.asarray(self.rewritten, dtype=np.float64) - np.asarray(self.original, dtype=np.float64)
        gain = amplify if amplify is not None else 127.0 / max(self.linf, 1)
        return Image.fromarray(np.clip(128 + gain * a, 0, 255).round().astype(np.uint8))

    def summary(self) -> str:
        def top(preds: list) -> str:
            return ", ".join(f"{p.label} {p.probability:.3f} (logit {p.logit:.3f})" for p in preds)

        status = "reached" if self.success else "NOT reached"
        return (
            f"{self.source}: {self.from_class} -> {self.to_class}: {status} in {self.steps} steps; "
            f"L-inf {self.linf}/255, L2 {self.l2:.3f}, PSNR {self.psnr:.2f} dB, SSIM {self.ssim:.4f}\n"
            f"  before: {top(self.before)}\n  after:  {top(self.after)}"
        )


def save_rewrite(explainer: "Explainer", result: RewriteResult, out: str | Path, stem: str = "rewrite") -> dict[str, Path]:
    """Write the rewritten PNG, the amplified difference, a before/after picture with the ``complete``
    maps of both classes, and a JSON of the numbers."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / f"{stem}.png", "difference": out / f"{stem}_difference.png", "json": out / f"{stem}.json"}
    result.rewritten.save(paths["png"])
    result.difference().save(paths["difference"])
    paths["json"].write_text(json.dumps(result.numbers(), indent=2))
    classes = [result.from_class, result.to_class]
    res = explainer.explain([result.original] * 2 + [result.rewritten] * 2, target=classes * 2, method="complete")
    probs = res.logits.softmax(-1)
    titles = [
        [f"complete: {c}\np = {float(probs[2 * row + j, res.targets[2 * row + j]]):.3f}" for j, c in enumerate(classes)]
        for row in range(2)
    ]
    fig = viz.grid(
        [result.original, result.rewritten],
        [[res.maps[0], res.maps[1]], [res.maps[2], res.maps[3]]],
        col_titles=["image"],
        row_titles=["before", f"after\nL-inf {result.linf}/255, PSNR {result.psnr:.1f} dB"],
        cell_titles=titles,
    )
    paths["before_after"] = viz.save_figure(fig, out / f"{stem}_before_after.png")
    return paths


# --------------------------------------------------------------------------- losses (descended)


class Margin:
    """``max_{c != to} logit[c] - logit[to]``: the paper's ``logit[from] - logit[to]`` with ``from`` taken,
    at every step, as the strongest class other than ``to`` (Carlini & Wagner's margin). Unlike the
    fixed-``from`` difference it cannot stall with a third class on top."""

    name = "margin"
    needs_contrast = True

    def __call__(self, logits: torch.Tensor, from_: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
        others = logits.scatter(1, to[:, None], -torch.inf)
        return others.amax(dim=1) - logits.gather(1, to[:, None])[:, 0]


class CrossEntropy:
    """``-log p(to)`` = ``logsumexp(logits) - logit[to]``."""

    name = "xent"
    needs_contrast = True

    def __call__(self, logits: torch.Tensor, from_: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(logits, dim=1) - logits.gather(1, to[:, None])[:, 0]


#: Losses for rewriting, besides the two-class losses of :mod:`attngrad.losses` (``diff``: the paper's
#: ``logit[from] - logit[to]``; ``normdiff``: eq. 8), all called as ``loss(logits, from, to)`` and descended.
REWRITE_LOSSES = {cls.name: cls for cls in (Margin, CrossEntropy)}


def get_rewrite_loss(loss: LossLike):
    if isinstance(loss, str) and loss in REWRITE_LOSSES:
        return REWRITE_LOSSES[loss]()
    loss_fn = get_loss(loss)
    if not loss_fn.needs_contrast:
        raise AttngradError(
            f"loss {loss_fn.name!r} does not compare two classes; use margin, xent, diff or normdiff"
        )
    return loss_fn


# --------------------------------------------------------------------------- the optimisation


def _budget(eps: float) -> int:
    """The L-inf budget in whole 8-bit levels (eps in [0, 1] units)."""
    if not eps > 0:
        raise AttngradError(f"eps must be > 0 (an L-inf budget in [0, 1] units, e.g. 2/255), not {eps}")
    levels = math.floor(eps * 255 + 1e-6)
    if levels < 1:
        raise AttngradError(f"eps = {eps:g} is below one 8-bit level (1/255 = {1 / 255:.5f}); use eps >= 1/255")
    if levels > 255:
        raise AttngradError(f"eps = {eps:g} is over the whole pixel range; use eps <= 1")
    return levels


def rewrite_batch(
    explainer: "Explainer",
    images: Sequence[ImageLike],
    to: TargetSpec,
    from_: TargetSpec = None,
    eps: float = 2 / 255,
    steps: int = 100,
    probability: float = 0.9,
    loss: LossLike = "margin",
    progress: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[RewriteResult]:
    """Rewrite a batch of images towards ``to`` (one class for all, or one per image).

    Args:
        images: paths or PIL images; rewritten at the model's input geometry.
        to: the class to reach (name, index, or one per image).
        from_: the class to leave (default: each image's prediction).
        eps: L-inf budget in [0, 1] units, a whole number of 8-bit levels (default 2/255).
        steps: at most this many updates of one 8-bit level each.
        probability: stop once ``to`` is top-1 with at least this probability.
        loss: descended, called as ``loss(logits, from, to)``: ``"margin"`` (default: the paper's
            difference against the strongest other class, see :class:`Margin`), ``"diff"``
            (``logit[from] - logit[to]``, the paper's loss with a fixed ``from``), ``"normdiff"``
            (eq. 8), ``"xent"`` (``-log p(to)``), or another two-class loss.
        on_step: called after every forward pass as ``on_step(step, numbers)`` (numbers: images
            done, mean probability of ``to``); an exception it raises stops the run (cancel).

    Raises:
        AttngradError: ``eps <= 0`` or under one 8-bit level, ``to`` equal to the current
            prediction, ``to`` equal to ``from_``, a bad probability or step count.
    """
    levels = _budget(eps)
    if not 0 < probability < 1:
        raise AttngradError(f"probability must be between 0 and 1 (exclusive), not {probability}")
    if steps < 1:
        raise AttngradError(f"steps must be >= 1, not {steps}")
    loss_fn = get_rewrite_loss(loss)
    adapter = explainer.adapter
    if not isinstance(adapter, ImageAdapter):
        raise AttngradError(f"rewrite changes pixels: it needs an image model, not {type(adapter).__name__}")
    pre = adapter.preprocessor
    originals = [pre.geometry(load_image(im)) for im in images]
    if not originals:
        raise AttngradError("no images given")
    sources = [str(im) if not isinstance(im, Image.Image) else f"image {i}" for i, im in enumerate(images)]
    levels0 = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in originals])).permute(0, 3, 1, 2)
    levels0 = levels0.to(explainer.device)  # 8-bit levels, 0..255

    def model_input(lv: torch.Tensor) -> torch.Tensor:
        return pre.normalize(lv * pre.rescale)

    with torch.no_grad():
        logits0 = explainer.adapter.forward(model_input(levels0)).logits
    to_idx = resolve_targets(to, logits0, explainer.labels)
    from_idx = resolve_targets(from_, logits0, explainer.labels)
    prediction = logits0.argmax(dim=1)
    for i in range(len(originals)):
        if to_idx[i] == prediction[i]:
            raise AttngradError(
                f"{sources[i]} is already classified as {explainer.labels[int(to_idx[i])]!r}; choose another --to class"
            )
        if to_idx[i] == from_idx[i]:
            raise AttngradError(f"--to and --from are both {explainer.labels[int(to_idx[i])]!r}; choose two classes")
    low, high = (levels0 - levels).clamp(min=0), (levels0 + levels).clamp(max=255)
    current = levels0.clone()
    done = torch.zeros(len(originals), dtype=torch.bool, device=current.device)
    used = torch.zeros(len(originals), dtype=torch.long)
    with explainer.adapter.frozen_weights():  # gradients to the pixels only
        for step in tqdm(range(steps + 1), desc="rewriting", unit="step", disable=not progress):
            x = current.clone().requires_grad_(True)
            logits = explainer.adapter.forward(model_input(x)).logits
            probs = logits.detach().softmax(dim=1)
            reached = (logits.detach().argmax(dim=1) == to_idx) & (probs.gather(1, to_idx[:, None])[:, 0] >= probability)
            newly = reached & ~done
            used[newly.cpu()] = step
            done |= reached
            if on_step is not None:
                to_prob = float(probs.gather(1, to_idx[:, None]).mean())
                on_step(step, {"done": int(done.sum()), "to_probability": to_prob})
            if bool(done.all()) or step == steps:
                break
            (grad,) = torch.autograd.grad(loss_fn(logits, from_idx, to_idx).sum(), x)
            move = -grad.sign() * (~done).view(-1, 1, 1, 1)
            current = torch.minimum(torch.maximum(current + move, low), high)
    used[~done.cpu()] = steps
    rewritten = [Image.fromarray(a) for a in current.round().byte().permute(0, 2, 3, 1).cpu().numpy()]
    before = explainer.top_k(logits0, 5)
    after = explainer.predict(rewritten, k=5)  # the 8-bit pictures through the full preprocessing
    unit0, unit1 = levels0.double() / 255.0, current.double() / 255.0
    change = (current - levels0).abs().flatten(1)
    psnrs, ssims = psnr(unit1, unit0), ssim(unit1, unit0)
    l2s = (unit1 - unit0).flatten(1).norm(dim=1)
    results = []
    for i in range(len(originals)):
        success = after[i][0].index == int(to_idx[i]) and after[i][0].probability >= probability
        results.append(
            RewriteResult(
                source=sources[i],
                original=originals[i],
                rewritten=rewritten[i],
                from_class=explainer.labels[int(from_idx[i])],
                to_class=explainer.labels[int(to_idx[i])],
                success=success,
                steps=int(used[i]),
                linf=int(change[i].max()),
                l2=float(l2s[i]),
                psnr=float(psnrs[i]),
                ssim=float(ssims[i]),
                before=before[i],
                after=after[i],
            )
        )
    return results


def rewrite(
    explainer: "Explainer",
    image: ImageLike,
    to: int | str,
    from_: int | str | None = None,
    eps: float = 2 / 255,
    steps: int = 100,
    probability: float = 0.9,
    loss: LossLike = "margin",
    progress: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> RewriteResult:
    """Rewrite one image's class (see :func:`rewrite_batch`)."""
    return rewrite_batch(explainer, [image], to, from_, eps, steps, probability, loss, progress, on_step)[0]


def random_targets(explainer: "Explainer", images: Sequence[ImageLike], rng: np.random.Generator) -> list[int]:
    """One random class per image (uniform over the classes other than the image's prediction)."""
    predictions = [p[0].index for p in explainer.predict(list(images), k=1)]
    n = len(explainer.labels)
    targets = []
    for pred in predictions:
        t = int(rng.integers(n - 1))
        targets.append(t + int(t >= pred))  # skip the prediction
    return targets


def batch_summary(results: Sequence[RewriteResult]) -> dict:
    """Success rate, and median L-inf / PSNR / SSIM / steps over the successful rewrites."""
    ok = [r for r in results if r.success]

    def median(values: list[float]) -> float | None:
        return float(np.median(values)) if values else None

    return {
        "images": len(results),
        "success_rate": len(ok) / len(results) if results else 0.0,
        "median_linf_255": median([r.linf for r in ok]),
        "median_psnr_db": median([r.psnr for r in ok]),
        "median_ssim": median([r.ssim for r in ok]),
        "median_steps": median([r.steps for r in ok]),
    }
