"""Evaluation of explanation methods: the perturbation test (positive / negative AUC) and,
as an option, insertion / deletion AUC.

``attngrad evaluate perturbation ...`` or, distributed,
``torchrun --nproc-per-node N -m attngrad.evaluation perturbation ...``.
"""

from .data import DataSet, ImageDataset, LabelResolver, Sample, discover
from .perturbation import (
    DIRECTIONS,
    PERCENTS,
    InsertionDeletion,
    PerturbationTest,
    auc,
    blur,
    pixel_ranks,
    removal_counts,
    remove_pixels,
)
from .runner import compare_methods, evaluate_batch, load_shards, per_image_curves, run_perturbation, summarize

__all__ = [
    "DIRECTIONS",
    "PERCENTS",
    "DataSet",
    "ImageDataset",
    "InsertionDeletion",
    "LabelResolver",
    "PerturbationTest",
    "Sample",
    "auc",
    "blur",
    "compare_methods",
    "discover",
    "evaluate_batch",
    "load_shards",
    "per_image_curves",
    "pixel_ranks",
    "removal_counts",
    "remove_pixels",
    "run_perturbation",
    "summarize",
]
