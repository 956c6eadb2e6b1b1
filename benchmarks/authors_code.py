"""The rivals against their authors' own code: same CPU, same ViT-Ti weights, same input and class.

    python benchmarks/authors_code.py --authors-dir DIR [--methods tam,bi,bi_token,tis,vitcx,dix]
        [--checkpoint FILE] [--batch 16] [--threads 1] [--json results.json]

For each method it imports the authors' model file and explanation function from ``DIR`` at run
time (nothing of theirs is copied into attngrad), builds their ViT with ViT-Ti dimensions and
the shipped ViT-Ti weights, and explains the shipped ``el1`` and ``catdog`` images for their two
classes each, with their function (their loop: one image at a time) and with attngrad's method.
It prints seconds per image (theirs at batch 1; ours at batch 1 and batched) and the agreement of
the maps: max |theirs - ours| / max |theirs|, Spearman and Pearson over the 196 patches.

``DIR`` holds the five repositories side by side, named as on GitHub (see docs/authors-code.md):

    DIR/Transition_Attention_Maps    XianrenYty/Transition_Attention_Maps   (TAM)
    DIR/transformerinterp            jiaminchen-1031/transformerinterp      (BI-H, BI-T)
    DIR/dix                          dix-cikm23/dix                         (DIX)
    DIR/Transformer_Input_Sampling   aenglebert/Transformer_Input_Sampling  (TIS)
    DIR/CausalX-ViT                  vaynexie/CausalX-ViT                   (ViT-CX)

and, optionally, ``DIR/_deps``: the packages their code imports that attngrad does not need
(``pip install --no-deps --target DIR/_deps einops fast-pytorch-kmeans ttach scikit-image
lazy_loader opencv-python-headless``); it is put on ``sys.path`` when present.

Run-time patches, inside this process only: ``Tensor.cuda`` and ``Module.cuda`` return their
object unchanged (their code calls ``.cuda()``); ViT-CX's ``AgglomerativeClustering(affinity=)``
is passed on as ``metric=`` (scikit-learn >= 1.4 removed ``affinity``); TIS and ViT-CX print
nothing (``verbose=False``; ViT-CX's cluster count is silenced). A method whose code cannot be
imported or run is reported with the reason, and the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from _timing import write_json  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)
from torch import nn

from attngrad import Explainer
from attngrad.demo import CASES, asset_image
from attngrad.methods import get_method
from attngrad.methods._blocks import record_block_outputs
from attngrad.methods._common import recorded
from attngrad.methods.tis import _OUTPUTS, TIS, kmeans

RIVALS = ("tam", "bi", "bi_token", "tis", "vitcx", "dix")
REPOS = {
    "tam": "Transition_Attention_Maps",
    "bi": "transformerinterp",
    "bi_token": "transformerinterp",
    "dix": "dix",
    "tis": "Transformer_Input_Sampling",
    "vitcx": "CausalX-ViT",
}
#: Top-level module names the repositories define; dropped from sys.modules after each import so
#: two repositories with a package of the same name (``baselines``) do not mix.
_THEIR_MODULES = ("baselines", "vit_model", "cam", "causal_score", "ViT_CX", "tis", "saliency_utils",
                  "salieny_models", "imagenet_lables", "vit_saliency_map_generator")
#: ViT-CX variants: the noise their code adds outside each mask (see :func:`vitcx_fn`).
VITCX_NOISE = {"vitcx": "matched", "vitcx_drawn": "drawn", "vitcx_nonoise": "none"}
VIT_TI = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4, qkv_bias=True)


def _default_checkpoint() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "models" / "vit-tiny-patch16-224-timm" / "vit_tiny_patch16_224.safetensors"


def patch_cuda() -> None:
    """Their ``.cuda()`` calls become no-ops (this process only)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]


@contextlib.contextmanager
def their_path(*folders: Path):
    """Import from ``folders`` first; afterwards forget their modules (the functions keep working)."""
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing; extract the authors' repository there")
    old = list(sys.path)
    sys.path[:0] = [str(f) for f in folders]
    try:
        yield
    finally:
        sys.path[:] = old
        for name in list(sys.modules):
            if name.split(".")[0] in _THEIR_MODULES:
                del sys.modules[name]


def load_their_vit(cls: type, state: dict[str, torch.Tensor]) -> nn.Module:
    """Their ``VisionTransformer`` with ViT-Ti dimensions and the timm ViT-Ti weights (keys as timm's)."""
    model = cls(norm_layer=partial(nn.LayerNorm, eps=1e-6), **VIT_TI)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit their ViT: missing {missing}, unexpected {unexpected}")
    return model.eval()


def agreement(theirs: np.ndarray, ours: np.ndarray) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    t, o = theirs.ravel().astype(np.float64), ours.ravel().astype(np.float64)
    return {
        "rel_max_diff": float(np.abs(t - o).max() / np.abs(t).max()),
        "spearman": float(spearmanr(t, o)[0]),
        "pearson": float(pearsonr(t, o)[0]),
    }


# --- the authors' functions, one image (1, 3, H, W) and one class in, a (14, 14) map out ---------


def tam_fn(root: Path, state) -> Callable:
    with their_path(root / "Transition_Attention_Maps"):
        from baselines.ViT.ViT_explanation_generator import Baselines
        from baselines.ViT.ViT_new import VisionTransformer
    baselines = Baselines(load_their_vit(VisionTransformer, state))
    # start_layer 4, steps 20: their generate_visualizations.py (perturbation test)
    return lambda x, c: baselines.generate_transition_attention_maps(x, index=c, start_layer=4, steps=20)


def _bi_baselines(root: Path, state):
    with their_path(root / "transformerinterp" / "ViT"):
        from baselines.ViT.ViT_explanation_generator import Baselines
        from baselines.ViT.ViT_new import VisionTransformer
    return Baselines(load_their_vit(VisionTransformer, state))


def bi_fn(root: Path, state) -> Callable:
    baselines = _bi_baselines(root, state)
    # start_layer 4 (1-based), steps 20: their generate_visualizations.py
    return lambda x, c: baselines.generate_ours(x, index=c, start_layer=4, steps=20)


def bi_token_fn(root: Path, state) -> Callable:
    baselines = _bi_baselines(root, state)
    # start_layer 7 (1-based), steps 20: their generate_visualizations.py
    return lambda x, c: baselines.generate_ours_c(x, index=c, start_layer=7, steps=20)


def dix_fn(root: Path, state) -> Callable:
    with their_path(root / "dix"):
        import vit_saliency_map_generator as gen
        from vit_model.ViTmodel import VisionTransformer
    model = load_their_vit(VisionTransformer, state)

    def run(x, c):  # their handle_transformers, operation 'dix': layer_num 1 + layer_num 2
        return gen.get_dix_vit(model, [], "cpu", c, x[0], 1) + gen.get_dix_vit(model, [], "cpu", c, x[0], 2)

    return run


def tis_fn(root: Path, timm_model: nn.Module, seed: int) -> Callable:
    with their_path(root / "Transformer_Input_Sampling"):
        from tis import TIS
    # their config/method/tis.yaml: n_masks 1024, batch_size 128, tokens_ratio 0.5, verbose false;
    # normalise=False: the raw map (their default min-max is monotone; ours is raw)
    tis = TIS(timm_model, n_masks=1024, batch_size=128, tokens_ratio=0.5, normalise=False, verbose=False)

    def run(x, c):
        torch.manual_seed(seed)  # fast_pytorch_kmeans draws its initial points from the global generator
        return tis(x, class_idx=c)

    return run


def vitcx_fn(root: Path, timm_model: nn.Module, seed: int, noise: str) -> Callable:
    """Their ``ViT_CX`` with their README's defaults. ``noise``: ``"drawn"`` (their draw from the global
    generator seeded ``seed``), ``"matched"`` (cluster ``j`` gets the noise attngrad gives it: the
    draws of a generator seeded ``seed`` in the order of the clusters' lowest feature index), or
    ``"none"`` (zeros; their noise is hard-coded as ``0.1 * randn``)."""
    from sklearn.cluster import AgglomerativeClustering

    fitted: dict[str, np.ndarray] = {}

    def clustering(**kwargs):
        if "affinity" in kwargs:
            kwargs["metric"] = kwargs.pop("affinity")
        estimator = AgglomerativeClustering(**kwargs)
        plain_fit = estimator.fit

        def fit(X, y=None):
            out = plain_fit(X)
            fitted["labels"] = estimator.labels_
            return out

        estimator.fit = fit
        return estimator

    with their_path(root / "CausalX-ViT" / "ViT_CX"):
        import causal_score
        import ViT_CX as vitcx
    vitcx.AgglomerativeClustering = clustering

    def run(x, c):
        torch.manual_seed(seed)
        if noise != "drawn":
            causal_score.torch = _NoiseTorch(noise, fitted, seed)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                sal = vitcx.ViT_CX(timm_model, x, timm_model.blocks[-1].norm1, target_category=c,
                                   distance_threshold=0.1, gpu_batch=50)
        finally:
            causal_score.torch = torch
        return F.avg_pool2d(torch.as_tensor(sal)[None, None], 16)[0, 0]  # pixels -> patch means, as ours

    return run


class _NoiseTorch:
    """``torch`` for their causal_score module, with ``randn`` replaced (see :func:`vitcx_fn`)."""

    def __init__(self, mode: str, fitted: dict, seed: int):
        self.mode, self.fitted, self.seed = mode, fitted, seed

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn(self, shape, **kwargs):
        if self.mode == "none":
            return torch.zeros(shape, **kwargs)
        labels = self.fitted["labels"]
        generator = torch.Generator().manual_seed(self.seed)
        draws = [torch.randn(shape[1:], generator=generator) for _ in range(shape[0])]
        _, first = np.unique(labels, return_index=True)
        rank = np.argsort(np.argsort(first))  # their label -> attngrad's cluster number
        return torch.stack([draws[r] for r in rank])


class _TopkTIS(TIS):
    """attngrad's TIS with each mask's patches chosen by ``topk`` as in their ``generate_binary_masks``
    (ties, e.g. the all-zero centroid of an empty cluster, broken as ``torch.topk`` breaks them)
    instead of a stable descending sort (ties to the lowest patch index)."""

    def masks(self, trace):
        outputs = recorded(trace, _OUTPUTS, record_block_outputs)
        points = torch.cat(outputs, dim=-1)[:, trace.num_prefix_tokens :].transpose(1, 2).float()
        centroids = kmeans(points, self.n_masks, self.seed, self.max_iter, self.tol)
        return centroids.topk(max(1, int(self.tokens_ratio * points.shape[-1])), dim=-1).indices


# --- timing and comparison ---------------------------------------------------------------------


def timed(fn: Callable) -> tuple[tuple[float, float], object]:
    """((wall seconds, CPU seconds of this process), result)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - start, time.process_time() - cpu), out


def _best(times: list[tuple[float, float]]) -> tuple[float, float]:
    return min(times)


def run_method(theirs: Callable | tuple[list, list], ex: Explainer, pixels: torch.Tensor, classes: list[int],
               method, batch: int, repeats: int) -> tuple[dict, tuple[list, list]]:
    """Time and compare one method; ``theirs`` is their function or an earlier run's (maps, times).
    ``batch`` 0: no batched timing (the variants)."""
    if callable(theirs):
        their_maps, their_times = [], []
        for i in range(len(classes)):
            runs = [timed(lambda i=i: theirs(pixels[i : i + 1].clone(), classes[i])) for _ in range(repeats)]
            their_maps.append(torch.as_tensor(runs[-1][1]).detach().reshape(-1).float().numpy())
            their_times.append(_best([t for t, _ in runs]))
    else:
        their_maps, their_times = theirs
    our_maps, one_times = [], []
    for i in range(len(classes)):
        runs = [timed(lambda i=i: ex.explain(pixels[i : i + 1], target=[classes[i]], method=method)) for _ in range(repeats)]
        our_maps.append(runs[-1][1].maps[0].reshape(-1).numpy())
        one_times.append(_best([t for t, _ in runs]))
    count = len(classes)
    result = {
        "theirs_s_per_image": sum(t[0] for t in their_times) / count,
        "ours_batch1_s_per_image": sum(t[0] for t in one_times) / count,
        "theirs_cpu_s_per_image": sum(t[1] for t in their_times) / count,
        "ours_batch1_cpu_s_per_image": sum(t[1] for t in one_times) / count,
    }
    if batch:
        take = torch.arange(batch) % count
        big, big_classes = pixels[take], [classes[int(j)] for j in take]
        batched = _best([timed(lambda: ex.explain(big, target=big_classes, method=method))[0] for _ in range(repeats)])
        result["batch"] = batch
        result["ours_batched_s_per_image"] = batched[0] / batch
        result["ours_batched_cpu_s_per_image"] = batched[1] / batch
    per_item = [agreement(t, o) for t, o in zip(their_maps, our_maps)]
    return {
        **result,
        "agreement_per_item": per_item,
        "worst_rel_max_diff": max(a["rel_max_diff"] for a in per_item),
        "min_spearman": min(a["spearman"] for a in per_item),
        "min_pearson": min(a["pearson"] for a in per_item),
    }, (their_maps, their_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors-dir", required=True, type=Path, help="folder holding the five repositories")
    parser.add_argument("--methods", default=",".join(RIVALS),
                        help="any of " + ", ".join(RIVALS + tuple(VITCX_NOISE)[1:]) + ", tis_topk (vitcx_drawn: their own"
                        " noise draw, so the maps differ by the noise; vitcx_nonoise: noise zero on both sides; tis_topk:"
                        " ours with masks chosen by topk, as theirs; variants: agreement and batch-1 timing only)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="timm ViT-Ti state dict (default: ../shared/models/vit-tiny-patch16-224-timm/...)")
    parser.add_argument("--batch", type=int, default=16, help="images per call for our batched timing (TAM, BI, DIX; 0: none)")
    parser.add_argument("--mask-batch", type=int, default=4,
                        help="images per call for our batched timing of TIS and ViT-CX (their passes are per mask; 0: none)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per call (the best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--their-timm", choices=("shared", "fresh"), default="shared",
                        help="the timm model TIS and ViT-CX's code explain: attngrad's own (shared; its attention is"
                        " unfused, for the maps) or a fresh timm model with the same weights (timm's fused attention,"
                        " as their code gets it)")
    parser.add_argument("--items", type=int, default=None,
                        help="explain only the first N of the four (image, class) items (el1 zebra, el1 elephant, ...)")
    parser.add_argument("--seed", type=int, default=0, help="TIS / ViT-CX seed, theirs and ours")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(RIVALS) - set(VITCX_NOISE) - {"tis_topk"}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(RIVALS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    deps = args.authors_dir / "_deps"
    if deps.is_dir():
        sys.path.append(str(deps))
    checkpoint = args.checkpoint or _default_checkpoint()
    if not checkpoint.is_file():
        parser.error(f"{checkpoint}: no ViT-Ti checkpoint; pass --checkpoint FILE (timm vit_tiny_patch16_224)")
    patch_cuda()
    torch.set_grad_enabled(True)

    from safetensors.torch import load_file

    state = load_file(str(checkpoint))
    ex = Explainer.from_timm("vit_tiny_patch16_224", checkpoint)
    labels = ex.labels
    images, classes = [], []
    for filename, names in CASES.items():
        for label in names:
            images.append(asset_image(filename))
            classes.append(labels.index(label))
    images, classes = images[: args.items], classes[: args.items]
    pixels, _ = ex.prepare(images)
    pixels = pixels.detach()
    ex.explain(pixels[:1], method="raw_attention")  # warm-up
    env = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "load_before": os.getloadavg(),
        "items": [f"{Path(p).stem}:{labels[c]}" for p, c in zip(images, classes)], "batch": args.batch,
        "repeats": args.repeats, "checkpoint": checkpoint.name,
    }
    print(f"torch {env['torch']}, {env['threads']} threads, load {env['load_before'][0]:.2f}; items {env['items']}")
    their_model = ex.adapter.model
    if args.their_timm == "fresh":
        import timm

        their_model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
        their_model.load_state_dict(state)
        their_model.eval()
    env["their_timm"] = args.their_timm
    results: dict[str, dict] = {}
    their_runs: dict[str, tuple[list, list]] = {}
    for name in methods:
        batch = args.batch if name in ("tam", "bi", "bi_token", "dix") else args.mask_batch
        try:
            if name in ("tis", "tis_topk"):
                theirs = their_runs.get("tis") or tis_fn(args.authors_dir, their_model, args.seed)
                method = get_method("tis", seed=args.seed) if name == "tis" else _TopkTIS(seed=args.seed)
            elif name in VITCX_NOISE:
                noise = VITCX_NOISE[name]
                theirs = vitcx_fn(args.authors_dir, their_model, args.seed, noise)
                method = get_method("vitcx", seed=args.seed, noise=0.0 if noise == "none" else 0.1)
            else:
                builder = {"tam": tam_fn, "bi": bi_fn, "bi_token": bi_token_fn, "dix": dix_fn}[name]
                theirs = builder(args.authors_dir, state)
                method = get_method(name)
            if name not in RIVALS:
                batch = 0  # variants: agreement only
            results[name], run = run_method(theirs, ex, pixels, classes, method, batch, args.repeats)
            their_runs.setdefault(name, run)
        except Exception as err:  # their code: any import or run-time failure is reported, not fatal
            results[name] = {"error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}
        r = results[name]
        if "error" in r:
            print(f"{name:>13}: could not run the authors' code: {r['error']}", flush=True)
            continue
        line = (f"{name:>13}: s/img wall (CPU): theirs {r['theirs_s_per_image']:.3f} ({r['theirs_cpu_s_per_image']:.3f})"
                f" | ours batch 1 {r['ours_batch1_s_per_image']:.3f} ({r['ours_batch1_cpu_s_per_image']:.3f})")
        if "batch" in r:
            line += (f" | ours batch {r['batch']} {r['ours_batched_s_per_image']:.3f} ({r['ours_batched_cpu_s_per_image']:.3f})"
                     f" | theirs/ours(batched) CPU {r['theirs_cpu_s_per_image'] / r['ours_batched_cpu_s_per_image']:.1f}")
        print(line + f" | max rel diff {r['worst_rel_max_diff']:.1e}, spearman >= {r['min_spearman']:.4f},"
              f" pearson >= {r['min_pearson']:.4f}", flush=True)
    env["load_after"] = os.getloadavg()
    if args.json:
        write_json(args.json, {"settings": env, "methods": results})


if __name__ == "__main__":
    main()
