"""Train the LiT stand-in's two linear projections (attngrad.clip's offline default model).

Locked image tower: the shipped ViT-Ti, its pre-logit CLS feature (192-d). Locked text tower:
all-MiniLM-L6-v2, mean pooled (384-d). Trained: ``W_img`` (E x 192), ``W_txt`` (E x 384) and a
temperature, with the symmetric contrastive loss of CLIP/LiT (Radford et al. 2021; Zhai et al.
2022) on the 1000 ImageNet sample images (one per class, plus their mirror images) paired with
"a photo of a {class}". Features are computed once and cached (``--cache``, default in the
system's temporary folder), so re-training takes seconds.

    PYTHONPATH=src python scripts/train_lit.py                 # writes src/attngrad/assets/lit/
    PYTHONPATH=src python scripts/train_lit.py --holdout 0.2   # also: zero-shot top-1 on unseen classes

Top-1 is measured on the training images (1000 prompts, one per class): the stand-in is a
demonstration model, not a CLIP. ``--holdout`` trains on the other classes only and reports
top-1 on the held-out classes' images over all 1000 prompts (nothing is written then).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def prompt(name: str) -> str:
    return f"a photo of {'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def class_names() -> list[str]:
    from importlib import resources

    text = resources.files("attngrad").joinpath("assets/imagenet_classes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


@torch.no_grad()
def features(data: Path, cache: Path, batch: int) -> dict[str, torch.Tensor]:
    """Raw tower features of every sample image (and its mirror) and of every class prompt, cached."""
    if cache.exists():
        return torch.load(cache)
    from attngrad.clip.model import stand_in_towers
    from attngrad.io import load_image

    image_tower, text_tower = stand_in_towers(None)
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) != 1000:
        raise SystemExit(f"{data}: expected the 1000 ImageNet sample images, found {len(files)}")
    names = class_names()
    img, flip = [], []
    for start in range(0, len(files), batch):
        pixels = image_tower.preprocessor([load_image(p) for p in files[start : start + batch]])
        img.append(image_tower.forward(pixels).logits)
        flip.append(image_tower.forward(pixels.flip(-1)).logits)
        print(f"images {start + len(pixels)}/{len(files)}", flush=True)
    texts = [prompt(n) for n in names]
    txt = []
    for start in range(0, len(texts), batch):
        enc = text_tower.encode(texts[start : start + batch])
        txt.append(text_tower.forward(text_tower.embed(enc.input_ids), enc).logits)
    out = {"image": torch.cat(img), "flip": torch.cat(flip), "text": torch.cat(txt)}
    torch.save(out, cache)
    return out


def train(feats: dict[str, torch.Tensor], classes: torch.Tensor, dim: int, steps: int, lr: float, seed: int):
    """Symmetric InfoNCE over the training classes (full batch); returns (W_img, W_txt, logit_scale)."""
    torch.manual_seed(seed)
    img = torch.cat([feats["image"][classes], feats["flip"][classes]])
    txt = feats["text"][classes]
    labels = torch.arange(len(classes)).repeat(2)
    w_img = torch.nn.Parameter(torch.randn(dim, img.shape[1]) / img.shape[1] ** 0.5)
    w_txt = torch.nn.Parameter(torch.randn(dim, txt.shape[1]) / txt.shape[1] ** 0.5)
    scale = torch.nn.Parameter(torch.tensor(float(torch.log(torch.tensor(10.0)))))
    opt = torch.optim.AdamW([w_img, w_txt, scale], lr=lr, weight_decay=1e-4)
    for step in range(steps):
        a = F.normalize(img @ w_img.T, dim=-1)
        b = F.normalize(txt @ w_txt.T, dim=-1)
        logits = scale.clamp(max=4.6052).exp() * a @ b.T  # temperature capped at 100, as CLIP
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T[:, : len(classes)], labels[: len(classes)])
                + F.cross_entropy(logits.T[:, len(classes) :], labels[: len(classes)])) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f}", flush=True)
    return w_img.detach(), w_txt.detach(), scale.detach().clamp(max=4.6052)


def top1(feats, w_img, w_txt, images: torch.Tensor) -> float:
    """Zero-shot top-1 of ``images`` (image i has class i) over all 1000 class prompts."""
    a = F.normalize(feats["image"][images] @ w_img.T, dim=-1)
    b = F.normalize(feats["text"] @ w_txt.T, dim=-1)
    return float(((a @ b.T).argmax(dim=1) == images).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ATTNGRAD_SAMPLES", REPO.parent / "shared" / "data" / "imagenet-sample")),
                        help="the 1000 ImageNet sample images (<wnid>_<name>.jpg; env ATTNGRAD_SAMPLES)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "attngrad-lit-features.pt")
    parser.add_argument("--out", type=Path, default=REPO / "src" / "attngrad" / "assets" / "lit")
    parser.add_argument("--dim", type=int, default=128, help="joint embedding size")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--holdout", type=float, default=0.0, help="fraction of classes held out (reports only)")
    args = parser.parse_args()

    t0 = time.time()
    feats = features(args.data, args.cache, args.batch)
    print(f"features: {time.time() - t0:.0f} s", flush=True)
    n = feats["image"].shape[0]
    if args.holdout > 0:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))
        cut = int(n * args.holdout)
        held, kept = perm[:cut].sort().values, perm[cut:].sort().values
        w_img, w_txt, _ = train(feats, kept, args.dim, args.steps, args.lr, args.seed)
        print(f"zero-shot top-1, training classes' images ({len(kept)}): {top1(feats, w_img, w_txt, kept):.3f}")
        print(f"zero-shot top-1, held-out classes' images ({len(held)}, over all 1000 prompts): "
              f"{top1(feats, w_img, w_txt, held):.3f}")
        return
    everything = torch.arange(n)
    w_img, w_txt, scale = train(feats, everything, args.dim, args.steps, args.lr, args.seed)
    acc = top1(feats, w_img, w_txt, everything)
    print(f"zero-shot top-1 on the 1000 training images over 1000 prompts: {acc:.3f}")
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({"image": w_img.contiguous(), "text": w_txt.contiguous(), "logit_scale": scale.reshape(1)},
              str(args.out / "projections.safetensors"))
    info = {"dim": args.dim, "steps": args.steps, "lr": args.lr, "seed": args.seed,
            "prompt": "a photo of a/an {class}", "top1_training_images": round(acc, 4),
            "command": "PYTHONPATH=src python scripts/train_lit.py"}
    (args.out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out / 'projections.safetensors'} ({time.time() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
