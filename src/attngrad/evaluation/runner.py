"""The perturbation test over a data set (one job: the run loop): batched, resumable, distributed.

- **Batches.** The labelled images, in sorted order, are cut into fixed batches of
  ``batch_size``. Per batch: one forward + one backward pass explains every method
  (:meth:`Explainer.explain_methods`); that pass's logits are the unperturbed (0 %)
  prediction shared by all methods; each method's map serves both directions; the
  perturbed inputs go through the model in chunks of ``eval_batch_size``. With
  ``insertion_deletion`` the insertion curve is measured too (deletion's inner points are
  the positive perturbation's probabilities, so only its 100 % end, the black image, is new).
- **Guided.** With a guide image (the paper: a zebra) each image is stitched beside it. By
  default (``guide_region="whole"``) the test is the paper's (Cui, Fan & Chen, section 4.6.1):
  the stitched image is explained, ranked, perturbed and classified as a whole. With
  ``guide_region="original"`` the map is cropped to the original's half and the original
  image alone is perturbed.
- **Resumable.** Each finished batch is written at once, atomically, as a shard
  (:mod:`.storage`); ``resume=True`` skips the batches already done, so a stopped run loses at
  most the batches in flight; since batches are fixed, the final numbers equal an
  uninterrupted run's exactly.
- **Distributed.** Under ``torchrun`` batch ``j`` goes to rank ``j % world_size``
  (:mod:`.distributed`); each rank writes its own shards, and rank 0 summarises them.
- **Results.** :func:`~.summary.summarize` turns the shards into ``results.json``,
  ``results.csv``, ``results.md``, ``curves.png`` and ``per_image.npz``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import stitch as _stitch
from ..errors import AttngradError
from ..explainer import Explainer
from ..io import load_image
from ..methods import get_method
from .data import Batch, DataSet, ImageDataset, LabelResolver, collate, preprocessor_of
from .distributed import barrier, dist_info
from .perturbation import DIRECTIONS, InsertionDeletion, PerturbationTest, blur, class_probability
from .resumable import compute_batches, prepare_on_rank0
from .storage import (
    GUIDED_PROTOCOLS,
    INSERTION_PROTOCOL,
    RunRecord,
    done_batches,
    guide_digest,
    image_records,
    prepare_folder,
    records_digest,
    relative,
    shard_path,
    write_shard,
)
from .summary import summarize

GUIDE_REGIONS = tuple(GUIDED_PROTOCOLS)


@dataclass
class RunSettings:
    """What :func:`run_perturbation` runs, and how.

    Attributes:
        methods: method names (each map serves both directions).
        explain: ``"label"`` (the data set's class) or ``"predicted"`` (the model's top-1).
        guide: a guide image stitched beside every image (images of its class are skipped).
        guide_region: ``"whole"`` (the paper's protocol: the stitched image is ranked and
            perturbed) or ``"original"`` (the map cropped to the original, which alone is perturbed).
        batch_size: images per explanation pass (the unit of resumption and distribution).
        eval_batch_size: perturbed images per forward pass.
        workers: DataLoader worker processes decoding images.
        resume: continue the run stored in the output folder.
        insertion_deletion: measure the insertion / deletion curves too (Petsiuk et al. 2018).
        model: the model's name as given, stored in ``run.json`` (a local folder relative to the run folder).
        progress: show a progress bar.
        max_batches: stop after this many batches of this rank (for tests and benchmarks).
    """

    methods: Sequence[str]
    explain: str = "label"
    guide: str | Path | None = None
    guide_region: str = "whole"
    batch_size: int = 16
    eval_batch_size: int = 64
    workers: int = 2
    resume: bool = False
    insertion_deletion: bool = False
    model: str = ""
    progress: bool = True
    max_batches: int | None = None
    #: ``{method: {option: value}}`` (``--method-option``); part of the run's identity (``run.json``)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`AttngradError` for a value a run cannot use, before anything is written."""
        if self.explain not in ("label", "predicted"):
            raise AttngradError(f"--explain must be label or predicted, not {self.explain!r}")
        if self.guide_region not in GUIDE_REGIONS:
            raise AttngradError(f"--guide-region must be {' or '.join(GUIDE_REGIONS)}, not {self.guide_region!r}")
        if not self.methods:
            raise AttngradError("no methods given; e.g. --methods gae,complete,random")
        for name, value in (("--batch-size", self.batch_size), ("--eval-batch-size", self.eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise AttngradError(f"{name} must be a positive number of images, not {value}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise AttngradError(f"--workers must be 0 or more, not {self.workers}")
        from ..methods.options import check_options

        options = check_options(self.method_options, list(self.methods))
        for name in self.methods:
            get_method(name, **options.get(name, {}))  # unknown names and bad options fail here, before any work


# ----------------------------------------------------------------------------- guide


def load_guide(guide: str | Path, resolver: LabelResolver, explainer: Explainer) -> tuple[Image.Image, int]:
    """The guide image and its class (from its ``<wnid>_<name>`` file name, else the model's top-1)."""
    image = load_image(guide)  # raises AttngradError with a clear message for a bad path
    try:
        return image, resolver.resolve(Path(guide).stem)
    except AttngradError:
        return image, explainer.predict(image, k=1)[0][0].index


# ----------------------------------------------------------------------------- one batch


def _forward(explainer: Explainer) -> Callable[[torch.Tensor], torch.Tensor]:
    adapter = explainer.adapter

    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return adapter.forward(pixel_values).logits

    return forward


def evaluate_batch(
    explainer: Explainer,
    batch: Batch,
    methods: Sequence[str],
    *,
    explain: str = "label",
    eval_batch_size: int = 64,
    guide_region: str = "whole",
    crop_region: Any = None,
    insertion_deletion: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Per-image raw results of one batch: the unperturbed prediction, and per method and
    direction, top-1 hits and the class probability at 10 %, ..., 90 % removed (with
    ``insertion_deletion``: also the insertion steps and the black and blurred images).

    A guided batch (``batch.guided`` set) is tested on the stitched images with
    ``guide_region="whole"`` (the paper's protocol), or on the originals with the cropped map
    with ``guide_region="original"`` (then ``crop_region`` cuts the maps).
    """
    device = explainer.device
    pre = preprocessor_of(explainer.adapter)
    forward = _forward(explainer)
    labels = batch.labels.to(device)
    cropped = batch.guided is not None and guide_region == "original"
    # The paper's protocol is the plain test on the stitched images: they are the input.
    unit = (batch.guided if batch.guided is not None and not cropped else batch.unit).to(device)
    if not cropped:
        results = explainer.explain_methods(pre.normalize(unit), methods, target=labels if explain == "label" else None,
                                            options=options)
        first = next(iter(results.values()))
        logits0, targets = first.logits, first.targets
        maps = {name: r.maps for name, r in results.items()}
    else:
        # Explain the class on the stitched image, crop the map to the original's region,
        # and perturb the original image (method.md, experiment 3 and the perturbation test).
        assert batch.guided is not None and batch.regions is not None  # cropped: a guided batch, whose regions collate keeps
        logits0 = forward(pre.normalize(unit))
        targets = labels if explain == "label" else logits0.argmax(dim=-1)
        results = explainer.explain_methods(pre.normalize(batch.guided.to(device)), methods, target=targets,
                                            options=options)
        size = tuple(unit.shape[-2:])
        maps = {
            name: torch.cat(
                [
                    F.interpolate(crop_region(r.maps[i : i + 1], region)[:, None].float(), size=size, mode="bilinear")[:, 0]
                    for i, region in enumerate(batch.regions)
                ]
            )
            for name, r in results.items()
        }
    logits0 = logits0.detach().float()
    out: dict[str, np.ndarray] = {
        "index": np.asarray(batch.indices, dtype=np.int64),
        "label": batch.labels.numpy().astype(np.int64),
        "target": targets.cpu().numpy().astype(np.int64),
        "pred0": logits0.argmax(dim=-1).cpu().numpy().astype(np.int64),
        "prob0": class_probability(logits0, targets).cpu().numpy().astype(np.float32),
    }
    blurred = blur(unit) if insertion_deletion else None
    for name in methods:
        for direction in DIRECTIONS:
            res = PerturbationTest(direction, eval_batch_size)(forward, unit, maps[name], targets, pre.normalize)
            out[f"{name}.{direction}.correct"] = res.correct.numpy()
            out[f"{name}.{direction}.prob"] = res.probability.numpy().astype(np.float32)
        if insertion_deletion:
            test = InsertionDeletion("insertion", eval_batch_size, blurred=blurred)
            res = test(forward, unit, maps[name], targets, pre.normalize)
            out[f"{name}.insertion.prob"] = res.probability.numpy().astype(np.float32)
    if blurred is not None:  # insertion_deletion
        for key, image in (("prob_black", torch.zeros_like(unit)), ("prob_blur", blurred)):
            out[key] = class_probability(forward(pre.normalize(image)), targets).cpu().numpy().astype(np.float32)
    return out


# ----------------------------------------------------------------------------- the run


def _record(explainer: Explainer, dataset: DataSet, settings: RunSettings, out: Path, samples, skipped_guide,
            digest: str, world: int) -> RunRecord:  # fmt: skip
    """The run's settings as stored: every path relative to the run folder or the data folder."""
    root = dataset.root or "."
    guided = settings.guide is not None
    protocol = RunRecord.protocol + (INSERTION_PROTOCOL if settings.insertion_deletion else "")
    model = relative(settings.model, out) if settings.model and Path(settings.model).exists() else settings.model
    return RunRecord(
        data=relative(root, out) or "", methods=list(settings.methods), explain=settings.explain,
        method_options={k: dict(v) for k, v in settings.method_options.items()},
        guide=relative(settings.guide, out), guide_digest=guide_digest(settings.guide), guide_region=settings.guide_region if guided else None,
        limit=dataset.limit, every=dataset.every, batch_size=settings.batch_size,
        eval_batch_size=settings.eval_batch_size, model=model or "", table=relative(dataset.table, out),
        image_labels=relative(dataset.image_labels, out), insertion_deletion=settings.insertion_deletion,
        device=str(explainer.device), world_size=world, num_samples=len(samples), samples_digest=digest,
        protocol=protocol, guided_protocol=GUIDED_PROTOCOLS[settings.guide_region] if guided else None,
        skipped_unknown=[(relative(p, root) or p, why) for p, why in dataset.skipped],
        skipped_guide_class=[relative(p, root) or p for p in skipped_guide],
    )  # fmt: skip


def run_perturbation(
    explainer: Explainer, dataset: DataSet, out: str | Path, settings: RunSettings
) -> dict[str, Any] | None:
    """Run the perturbation test of ``settings.methods`` on ``dataset`` into ``out``; return the
    summary (on rank 0; ``None`` on other ranks and when ``max_batches`` stopped the run early).

    Nothing is written when a setting is wrong; a run that fails before its first result
    removes what it created.
    """
    settings.check()
    out = Path(out)
    rank, world = dist_info()
    samples = dataset.samples
    guide_image, stitch, crop_region, skipped_guide = None, None, None, []
    if settings.guide is not None:
        guide_image, guide_class = load_guide(settings.guide, LabelResolver(explainer.labels, dataset.table), explainer)
        stitch, crop_region = _stitch.stitch, _stitch.crop_region
        skipped_guide = [s.path for s in samples if s.label == guide_class]
        samples = [s for s in samples if s.label != guide_class]
    if not samples:
        raise AttngradError("no labelled images left to evaluate (see the skipped files above)")

    def prepare() -> list[Path]:
        records = image_records(samples, dataset.root or ".")
        record = _record(explainer, dataset, settings, out, samples, skipped_guide, records_digest(records), world)
        return prepare_folder(out, record, settings.resume, records)

    created = prepare_on_rank0(out, prepare)

    batch_size = settings.batch_size
    batches = [list(range(i, min(i + batch_size, len(samples)))) for i in range(0, len(samples), batch_size)]
    mine = list(range(rank, len(batches), world))
    done = done_batches(out, batches, mine)
    todo = [j for j in mine if j not in done]
    if settings.max_batches is not None:
        todo = todo[: settings.max_batches]
    root = dataset.root or "."
    loader = DataLoader(
        ImageDataset(samples, preprocessor_of(explainer.adapter), guide_image, stitch),
        batch_sampler=[batches[j] for j in todo],
        num_workers=settings.workers,
        collate_fn=collate,
        pin_memory=explainer.device.type == "cuda",
    )

    def compute(j: int, batch: Batch) -> None:
        messages = [m.replace(samples[i].path, relative(samples[i].path, root) or "") for i, m in batch.failed]
        for message in messages:
            tqdm.write(f"attngrad: skipped: {message}", file=sys.stderr)
        arrays = {
            "failed_index": np.asarray([i for i, _ in batch.failed], dtype=np.int64),
            "failed_message": np.asarray(messages, dtype=str),
        }
        if batch.indices:
            arrays["path"] = np.asarray([relative(samples[i].path, root) for i in batch.indices], dtype=str)
            results = evaluate_batch(
                explainer, batch, settings.methods, explain=settings.explain,
                eval_batch_size=settings.eval_batch_size, guide_region=settings.guide_region,
                crop_region=crop_region, insertion_deletion=settings.insertion_deletion,
                options=settings.method_options,
            )  # fmt: skip
            arrays.update(results)
        write_shard(shard_path(out, j), arrays)

    compute_batches(todo, compute, inputs=loader, created=created if rank == 0 else (),
               total=sum(len(batches[j]) for j in mine), weight=lambda j: len(batches[j]), unit="img",
               desc="perturbation", progress=settings.progress and rank == 0)
    barrier()
    if rank != 0:
        return None
    # complete? from the shards' names (written atomically) and per_image.npz's index: summarize reads them once
    if settings.max_batches is not None and len(done_batches(out, batches, range(len(batches)), verify=False)) < len(batches):
        return None
    return summarize(out)
