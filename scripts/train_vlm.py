"""Train the LLaVA stand-in's projector: ViT-Ti patch features -> SmolLM2's embedding space.

The vision encoder (shipped ViT-Ti at 128 px) and the language model (SmolLM2-135M-Instruct) stay
locked; only LLaVA's two-layer MLP projector learns, on the ImageNet sample images and their
mirror images (each drawn at random per epoch), to make the model answer "What is in this photo?" with the class name.
Every 20th image (50) is held out to measure what the projector does on classes it never saw.

    python scripts/train_vlm.py --data ../shared/data            # writes src/attngrad/assets/vlm/

Prints and writes (``--report``) the training time and the accuracy (the greedy answer contains
the class name) on the training images and on the held-out ones.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from attngrad.vlm.load import ASSETS, build_stand_in, stand_in_settings


def read_classes(data: Path) -> list[tuple[int, str, Path]]:
    rows = [line.split("\t") for line in (data / "imagenet_classes.tsv").read_text().splitlines()[1:]]
    return [(int(r[0]), r[2].replace("_", " "), data / r[3]) for r in rows]


@torch.no_grad()
def features(model, preprocess, paths: list[Path], mirror: bool, batch: int = 64) -> torch.Tensor:
    """Vision features that become image tokens (N, K, D_vision), before the projector."""
    out = []
    for i in tqdm(range(0, len(paths), batch), desc=f"features{' (mirrored)' if mirror else ''}"):
        images = [Image.open(p).convert("RGB") for p in paths[i:i + batch]]
        if mirror:
            images = [ImageOps.mirror(im) for im in images]
        hidden = model.model.vision_tower(preprocess(images), output_hidden_states=True).hidden_states
        out.append(hidden[model.config.vision_feature_layer][:, 1:])
    return torch.cat(out)


def sequences(tokenizer, template: str, question: str, names: list[str]):
    before, after = template.split("<image>", 1)
    head = tokenizer(before.format(prompt=question), add_special_tokens=True)["input_ids"]
    tail = tokenizer(after.format(prompt=question), add_special_tokens=False)["input_ids"]
    answers = [tokenizer(" " + n, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for n in names]
    return head, tail, answers


def embed_batch(model, head, tail, feats, answers):
    """Right-padded inputs_embeds (B, T, D), attention mask and the label of every position (-100: none)."""
    emb = model.get_input_embeddings()
    dev = feats.device
    img = model.model.multi_modal_projector(feats)
    b, k, _ = img.shape
    longest = max(len(a) for a in answers)
    n = len(head) + k + len(tail) + longest
    ids = torch.full((b, n), 0, dtype=torch.long, device=dev)
    labels = torch.full((b, n), -100, dtype=torch.long, device=dev)
    mask = torch.zeros((b, n), dtype=torch.long, device=dev)
    start = len(head) + k + len(tail)
    for i, a in enumerate(answers):
        ids[i, start:start + len(a)] = torch.tensor(a)
        labels[i, start - 1:start - 1 + len(a)] = torch.tensor(a)  # position t predicts token t + 1
        mask[i, :start + len(a)] = 1
    x = emb(ids)
    h = emb(torch.tensor(head, dtype=torch.long, device=dev))[None].expand(b, -1, -1)
    t = emb(torch.tensor(tail, dtype=torch.long, device=dev))[None].expand(b, -1, -1)
    x = torch.cat([h, img, t, x[:, start:]], dim=1)
    return x, mask, labels


def logits_of(model, x, mask):
    hidden = model.model.language_model(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
    return model.lm_head(hidden)


@torch.no_grad()
def answer(model, tokenizer, head, tail, feats, steps: int = 8) -> list[str]:
    """Greedy answers (no cache; the prompts are short)."""
    emb = model.get_input_embeddings()
    x, _, _ = embed_batch(model, head, tail, feats, [[] for _ in range(len(feats))])
    out: list[list[int]] = [[] for _ in range(len(feats))]
    for _ in range(steps):
        nxt = logits_of(model, x, torch.ones(x.shape[:2], dtype=torch.long))[:, -1].argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            out[i].append(t)
        x = torch.cat([x, emb(nxt)[:, None]], dim=1)
    eos = tokenizer.eos_token_id
    return [tokenizer.decode(o[: o.index(eos)] if eos in o else o) for o in out]


def accuracy(model, tokenizer, head, tail, feats, names, batch=64) -> float:
    hits = 0
    for i in range(0, len(names), batch):
        for said, name in zip(answer(model, tokenizer, head, tail, feats[i:i + batch]), names[i:i + batch]):
            hits += name.lower() in said.lower()
    return hits / max(len(names), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--question", default="What is in this photo?")
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--report", type=Path, default=None, help="JSON file for time and accuracies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N images only (a smoke test)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    started = time.time()
    model, tokenizer, preprocess = build_stand_in(projector=False)
    settings = stand_in_settings()
    rows = read_classes(args.data)[: args.limit]
    train = [r for r in rows if r[0] % 20 != 0]
    held = [r for r in rows if r[0] % 20 == 0]
    for p in model.parameters():
        p.requires_grad_(False)
    proj = model.model.multi_modal_projector
    for p in proj.parameters():
        p.requires_grad_(True)
    model.config.text_config._attn_implementation = "sdpa"  # training only: no maps needed
    plain, mirrored = (features(model, preprocess, [r[2] for r in train], m) for m in (False, True))
    held_feats = features(model, preprocess, [r[2] for r in held], False)
    names = [r[1] for r in train]
    with torch.no_grad():  # start the projector's outputs at the scale of the LM's token embeddings
        scale = model.get_input_embeddings().weight.std() / proj(plain[:64]).std()
        proj.linear_2.weight.mul_(scale)
        proj.linear_2.bias.mul_(scale)
    head, tail, answers = sequences(tokenizer, settings["template"], args.question, names)
    opt = torch.optim.AdamW(proj.parameters(), lr=args.lr, weight_decay=0.0)
    steps = args.epochs * ((len(names) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(total=steps, desc="train projector")
    for _ in range(args.epochs):
        order = torch.randperm(len(names))
        flip = torch.rand(len(names)) < 0.5  # each image or its mirror image, drawn per epoch
        feats = torch.where(flip[:, None, None], mirrored, plain)
        for i in range(0, len(names), args.batch_size):
            idx = order[i:i + args.batch_size].tolist()
            x, mask, labels = embed_batch(model, head, tail, feats[idx], [answers[j] for j in idx])
            logits = logits_of(model, x, mask)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    train_time = time.time() - started
    model.config.text_config._attn_implementation = "eager"
    train_acc = accuracy(model, tokenizer, head, tail, plain, names)
    held_acc = accuracy(model, tokenizer, head, tail, held_feats, [r[1] for r in held])
    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.detach().half().contiguous() for k, v in proj.state_dict().items()}, str(args.out / "projector.safetensors"))
    (args.out / "vlm.json").write_text(json.dumps(settings, indent=1) + "\n")
    report = {
        "train_images": len(train), "held_out_images": len(held), "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "seconds": round(train_time, 1), "train_accuracy": round(train_acc, 4),
        "held_out_accuracy": round(held_acc, 4), "question": args.question,
        "projector_bytes": (args.out / "projector.safetensors").stat().st_size,
        "command": "python scripts/train_vlm.py --data ../shared/data " + (f"--epochs {args.epochs}"),
    }
    print(json.dumps(report, indent=1))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
