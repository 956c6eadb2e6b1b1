"""Evaluation of explanation methods: the perturbation test (positive / negative AUC).

``attngrad evaluate perturbation ...`` or, distributed,
``torchrun --nproc-per-node N -m attngrad.evaluation perturbation ...``.
"""

from .data import DataSet, ImageDataset, LabelResolver, Sample, discover
from .perturbation import DIRECTIONS, PERCENTS, PerturbationTest, auc, pixel_ranks, remove_pixels, removal_counts
from .runner import compare_methods, evaluate_batch, load_shards, run_perturbation, summarize

__all__ = [
    "DIRECTIONS",
    "PERCENTS",
    "DataSet",
    "ImageDataset",
    "LabelResolver",
    "PerturbationTest",
    "Sample",
    "auc",
    "compare_methods",
    "discover",
    "evaluate_batch",
    "load_shards",
    "pixel_ranks",
    "removal_counts",
    "remove_pixels",
    "run_perturbation",
    "summarize",
]
