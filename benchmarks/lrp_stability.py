"""How much a relevance map moves when the input moves a little: cosine between two maps per image.

    python benchmarks/lrp_stability.py [--model NAME|--timm CHECKPOINT] [--methods lrp,tattr,partial_lrp,complete]
        [--epsilons 0,0.001,0.01,0.1] [--noise 1e-5] [--authors-dir DIR] [--stages 0.99]

For the shipped ``el1`` (zebra) and ``catdog`` (bull mastiff) images it prints, per method (and
per ``lrp`` epsilon, the method option ``lrp.epsilon``):

* ``noise``: cosine between the map of the input and of the input plus Gaussian noise of std
  ``--noise`` (seed 0) on the preprocessed pixels;
* ``float64``: cosine between the float32 map and the map of the same input with the model and
  the propagation in float64 (rounding alone: what differs between a CPU and a GPU);
* for ``lrp`` with an epsilon, ``vs epsilon 0``: cosine to the reference rules' map.

With ``--authors-dir DIR`` (``DIR/Transformer-Explainability``: hila-chefer/Transformer-Explainability,
and einops on ``PYTHONPATH``), the reference code's full LRP (``generate_LRP(method="full")``, one
image per call, their model with the same timm ViT-Ti weights; needs ``--timm``) is run on the same
inputs: the same two cosines, the noise cosine with both maps in float64, and its cosine to
attngrad's ``lrp`` on each input.

``--stages C`` walks ``lrp``'s propagation (epsilon 0): each rule call is repeated with the noisy
input's activations and the clean input's relevance, and every call whose output's cosine to the
clean call falls below ``C`` for an image is printed, with the smallest ``|denominator|`` of its
signed z-rule (``y = a + b`` for a residual split, ``x @ y`` for a product): where the noise is
amplified, not merely carried down. ``carried``: the same call's cosine in the noisy run itself
(the noise carried down from above included).
See docs/results/lrp-stability.md.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from tattr_speed import with_rules  # noqa: E402  (the benchmarks folder is on sys.path when run as a script)

from attngrad import Explainer
from attngrad.demo import asset_image

IMAGES = ("el1.jpg", "catdog.png")
TARGETS = [340, 243]  # zebra, bull mastiff


def cosine(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)).tolist()


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:+.4f}" for v in values)


def their_lrp(root: Path, checkpoint: Path):
    """The reference code's full LRP as ``fn(pixels (B,3,H,W), dtype) -> (B, H, W)``."""
    from authors_code import patch_cuda, their_path  # beside this script (its folder is on sys.path)
    from safetensors.torch import load_file

    patch_cuda()
    with their_path(root):
        from baselines.ViT.ViT_explanation_generator import LRP
        from baselines.ViT.ViT_LRP import VisionTransformer

        model = VisionTransformer(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4, qkv_bias=True)
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-6  # timm's ViT-Ti
    missing, unexpected = model.load_state_dict(load_file(str(checkpoint)), strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not fit their ViT: missing {missing}, unexpected {unexpected}")
    gen = LRP(model.eval())

    def fn(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        model.to(dtype)
        try:
            return torch.cat([gen.generate_LRP(pixels[i:i + 1].to(dtype), index=TARGETS[i], method="full").detach().double()
                              for i in range(len(pixels))])
        finally:
            model.float()

    return fn


_NAMES = ("residual mid+mlp", "fc2", "fc1", "residual x+attn", "proj", "A V", "Q K^T", "qkv")


def stages(ex: Explainer, pixels: torch.Tensor, noisy: torch.Tensor, below: float) -> None:
    """Per rule call of ``lrp``: the noisy activations with the clean relevance (see the module doc)."""
    from attngrad.methods import relprop

    rules = {n: getattr(relprop, n) for n in ("residual_split", "zplus_linear", "matmul_relevance", "zb_conv")}
    log: list[tuple[str, tuple]] = []

    def logging(name: str):
        def fn(*args, **kwargs):
            out = rules[name](*args, **kwargs)
            log.append((name, args, out))
            return out
        return fn

    runs = []

    def record() -> None:
        for p in (pixels, noisy):
            log.clear()
            ex.explain_methods(p, ["lrp"], target=TARGETS)
            runs.append(list(log))

    with_rules({name: logging(name) for name in rules}, record)()
    blocks = (len(runs[0]) - 3) // 8
    with torch.no_grad():  # the rules again, on the recorded inputs (some are weights that require grad)
        for i, ((name, clean, clean_out), (_, moved, moved_out)) in enumerate(zip(*runs)):
            if name == "zb_conv":
                continue
            where = "head" if i == 0 else "embeddings" if i > 8 * blocks else f"block {blocks - 1 - (i - 1) // 8} {_NAMES[(i - 1) % 8]}"
            if name == "zplus_linear":
                out, ref, den = rules[name](moved[0], clean[1], clean[2]), rules[name](*clean[:3]), None
            else:
                out, ref = rules[name](moved[0], moved[1], clean[2]), rules[name](*clean)
                den = moved[0] + moved[1] if name == "residual_split" else moved[0] @ moved[1]
            def worst(outs, refs):
                outs, refs = (outs, refs) if isinstance(outs, tuple) else ((outs,), (refs,))
                return [min(v) for v in zip(*[cosine(a, b) for a, b in zip(outs, refs)])]

            own, carried = worst(out, ref), worst(moved_out, clean_out)
            if min(own) < below:
                small = "" if den is None else "  min |denominator| " + " ".join(f"{v:.1e}" for v in den.abs().flatten(1).amin(1).tolist())
                print(f"  {where:28s} cosine {_fmt(own)}  carried {_fmt(carried)}{small}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Hugging Face folder or name (default: shipped ViT-Ti)")
    parser.add_argument("--timm", type=Path, default=None, help="timm vit_tiny_patch16_224 checkpoint instead")
    parser.add_argument("--methods", default="lrp,tattr,partial_lrp,complete")
    parser.add_argument("--epsilons", default="0,0.001,0.01,0.1", help="lrp.epsilon values (lrp only)")
    parser.add_argument("--noise", type=float, default=1e-5)
    parser.add_argument("--authors-dir", type=Path, default=None)
    parser.add_argument("--stages", type=float, default=None, help="print lrp's rule calls below this cosine")
    args = parser.parse_args()

    ex = Explainer.from_timm("vit_tiny_patch16_224", args.timm) if args.timm else Explainer.from_pretrained(args.model, device="cpu")
    pixels = torch.cat([ex.prepare(asset_image(n))[0] for n in IMAGES])
    torch.manual_seed(0)
    noisy = pixels + args.noise * torch.randn_like(pixels)
    ex64 = copy.deepcopy(ex)
    ex64.adapter.model.double()

    def maps(explainer: Explainer, p: torch.Tensor, method: str, options: dict | None) -> torch.Tensor:
        return explainer.explain_methods(p, [method], target=TARGETS, options=options)[method].maps

    print(f"cosine per image ({', '.join(IMAGES)}); noise std {args.noise:g}")
    ours: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for method in args.methods.split(","):
        for eps in [float(e) for e in args.epsilons.split(",")] if method == "lrp" else [None]:
            options = None if eps is None else {"lrp": {"epsilon": eps}}
            clean, moved = maps(ex, pixels, method, options), maps(ex, noisy, method, options)
            wide = maps(ex64, pixels.double(), method, options)
            label = method if eps is None else f"lrp epsilon={eps:g}"
            if eps == 0.0:
                ours["lrp"] = (clean, moved)
            other = f"   vs epsilon 0 {_fmt(cosine(clean, ours['lrp'][0]))}" if eps and "lrp" in ours else ""
            print(f"{label:22s} noise {_fmt(cosine(clean, moved))}   float64 {_fmt(cosine(clean, wide))}{other}", flush=True)
    if args.stages is not None:
        print(f"lrp rule calls below cosine {args.stages:g} (noisy activations, clean relevance), top to bottom:")
        stages(ex, pixels, noisy, args.stages)
    if args.authors_dir is not None:
        if args.timm is None:
            raise SystemExit("--authors-dir needs --timm (their model loads timm's weights)")
        fn = their_lrp(args.authors_dir / "Transformer-Explainability", args.timm)
        clean, moved, wide, wide_moved = fn(pixels), fn(noisy), fn(pixels, torch.float64), fn(noisy, torch.float64)
        print(f"{'reference full LRP':22s} noise {_fmt(cosine(clean, moved))}   float64 {_fmt(cosine(clean, wide))}   "
              f"noise in float64 {_fmt(cosine(wide, wide_moved))}")
        if "lrp" in ours:
            print(f"{'reference vs ours':22s} input {_fmt(cosine(clean, ours['lrp'][0]))}   noisy   "
                  f"{_fmt(cosine(moved, ours['lrp'][1]))}")


if __name__ == "__main__":
    main()
