"""The helpers of benchmarks/authors_code.py that need none of the authors' repositories."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("authors_code", REPO / "benchmarks" / "authors_code.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "benchmarks"))  # as when run as a script: its helpers (_timing) beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def test_agreement(bench):
    theirs = np.array([0.0, 1.0, 2.0, 4.0])
    same = bench.agreement(theirs, theirs.copy())
    assert same == {"rel_max_diff": 0.0, "spearman": pytest.approx(1.0), "pearson": pytest.approx(1.0)}
    off = bench.agreement(theirs, np.array([0.0, 1.0, 2.0, 3.0]))
    assert off["rel_max_diff"] == pytest.approx(0.25)
    assert off["spearman"] == pytest.approx(1.0) and off["pearson"] < 1.0


def test_their_path_forgets_their_modules(bench, tmp_path):
    package = tmp_path / "baselines" / "ViT"
    package.mkdir(parents=True)
    (package / "ViT_new.py").write_text("VALUE = 7\n")
    with bench.their_path(tmp_path):
        from baselines.ViT.ViT_new import VALUE
    assert VALUE == 7
    assert not any(name.split(".")[0] == "baselines" for name in sys.modules)
    assert str(tmp_path) not in sys.path
    with pytest.raises(FileNotFoundError, match="extract the authors' repository"):
        with bench.their_path(tmp_path / "missing"):
            pass


def test_matched_noise_follows_attngrad_cluster_numbers(bench):
    """Their label j gets the draw attngrad gives the cluster numbered by j's lowest member."""
    from attngrad.methods.vitcx import cluster_features

    # four feature maps: 0 and 2 alike, 1 and 3 alike, the two pairs orthogonal
    maps = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.01, 0.0], [0.0, 1.0, 0.01]])
    ours = cluster_features(maps, 0.1)
    assert ours.tolist() == [0, 1, 0, 1]
    theirs_labels = np.array([1, 0, 1, 0])  # the same clusters, numbered the other way round
    fake = bench._NoiseTorch("matched", {"labels": theirs_labels}, seed=3)
    noise = fake.randn([2, 1, 2, 2])
    generator = torch.Generator().manual_seed(3)
    draws = [torch.randn(1, 2, 2, generator=generator) for _ in range(2)]
    # their label 1 holds members 0 and 2: attngrad's cluster 0, the first draw
    assert torch.equal(noise[1], draws[0]) and torch.equal(noise[0], draws[1])
    assert torch.equal(bench._NoiseTorch("none", {}, 0).randn([2, 1, 2, 2]), torch.zeros(2, 1, 2, 2))


def test_topk_tis_breaks_ties_as_topk(bench):
    """On a zero centroid (an empty cluster), topk and a stable descending sort keep different patches."""
    zero = torch.zeros(1, 1, 196)
    topk = set(zero.topk(98, dim=-1).indices.flatten().tolist())
    stable = set(zero.argsort(dim=-1, descending=True, stable=True)[..., :98].flatten().tolist())
    assert stable == set(range(98))
    assert len(topk) == 98  # which 98 is torch's business; the benchmark's variant follows it
    assert issubclass(bench._TopkTIS, bench.TIS)
