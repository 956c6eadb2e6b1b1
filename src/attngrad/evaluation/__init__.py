"""Evaluation of explanation methods: the perturbation test (positive / negative AUC) and,
as an option, insertion / deletion AUC.

``attngrad evaluate perturbation ...`` or, distributed,
``torchrun --nproc-per-node N -m attngrad evaluate perturbation ...``.
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
from .runner import RunSettings, evaluate_batch, run_perturbation
from .storage import load_results
from .summary import compare_methods, load_shards, per_image_curves, summarize

__all__ = [
    "DIRECTIONS",
    "PERCENTS",
    "DataSet",
    "ImageDataset",
    "InsertionDeletion",
    "LabelResolver",
    "PerturbationTest",
    "RunSettings",
    "Sample",
    "auc",
    "blur",
    "compare_methods",
    "discover",
    "evaluate_batch",
    "load_results",
    "load_shards",
    "per_image_curves",
    "pixel_ranks",
    "removal_counts",
    "remove_pixels",
    "run_perturbation",
    "summarize",
]
