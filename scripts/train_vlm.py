"""Train the LLaVA stand-in's projector: ViT-Ti features -> SmolLM2's embedding space.

The vision encoder (shipped ViT-Ti at 224 px, its 197 last-layer tokens, class token included) and the
language model (SmolLM2-135M-Instruct) stay locked; only LLaVA's two-layer MLP projector learns, on the
1000 ImageNet sample images and their mirror images, in two stages:

1. **alignment** (cheap, no language-model pass): every projected vision token is pulled (squared error)
   towards the token embedding of the image's class name (the mean of its word pieces), the class given half
   by the label and half by the locked ViT's own class probabilities; the class token's error weighs
   ``--cls-weight`` times a patch token's mean. The features are standardised per channel first; the
   standardisation is folded into the projector's first linear layer, so the shipped projector is a plain LLaVA
   projector.
2. **answer** (the language model's loss): the answer " <class name><eos>" after
   ``Image: <image>\\nQuestion: What is in this photo?\\nAnswer:``, through the locked language model,
   for ``--answer-epochs`` epochs (each image or its mirror image drawn per epoch).

A later stage starts from a trained projector (``--init``): random views (``--augment``), grids (``--grids``), or
**multi-object composites** (``--composites``): two training images of different classes on one canvas (side by
side or one above the other; ``--composite-grids``: four in a 2 x 2 grid) answered with the multi-name loss, the
mean over the names present of their answer losses (:func:`multi_name_loss`), mixed with single images. The same
stage can take its answers from the locked ViT's own head (``--teacher``: a class drawn from the ViT's probabilities
on the very view shown, so that the language model learns to say what the ViT sees, in composites and in views with
a grey rectangle, ``--erase``, too). ``--device cuda`` trains on a GPU, ``--workers`` make the views in parallel
(docs/vlm.md).

    python scripts/train_vlm.py --data ../shared/data                 # all 1000 images: the shipped projector
    python scripts/train_vlm.py --data ../shared/data --held-out 20 --out OUT   # every 20th held out

Prints and writes (``--report``) the time and the accuracy (the greedy answer contains the class name) on the
training images and on the held-out ones. Held-out images are of classes never seen in training (the sample
has one image per class): they measure whether the projector carries the ViT's own knowledge over.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from attngrad.vlm.load import ASSETS, build_stand_in, stand_in_settings


def read_classes(data: Path) -> list[tuple[int, str, Path]]:
    rows = [line.split("\t") for line in (data / "imagenet_classes.tsv").read_text().splitlines()[1:]]
    return [(int(r[0]), r[2].replace("_", " "), data / r[3].strip()) for r in rows]


def augment(image: Image.Image, gen: torch.Generator, share: float = 1.0) -> Image.Image:
    """With probability ``share`` a random view: a crop of 30-100 % of the area (aspect 3/4-4/3), mirrored half the
    time, and a third of the time brought down to half the input size and back (what an image keeps inside a
    2 x 2 grid); else the whole image, mirrored half the time."""
    w, h = image.size
    u = torch.rand(5, generator=gen).tolist()
    if torch.rand(1, generator=gen).item() >= share:
        return ImageOps.mirror(image) if u[4] < 0.5 else image
    area, aspect = (0.3 + 0.7 * u[0]) * w * h, (3 / 4) * (16 / 9) ** u[1]
    cw, ch = min(w, round((area * aspect) ** 0.5)), min(h, round((area / aspect) ** 0.5))
    left, top = round(u[2] * (w - cw)), round(u[3] * (h - ch))
    image = image.crop((left, top, left + cw, top + ch))
    if u[4] < 0.5:
        image = ImageOps.mirror(image)
    if torch.rand(1, generator=gen).item() < 1 / 3:
        image = image.resize((112, 112), Image.Resampling.BICUBIC)
    return image


def grid_view(image: Image.Image, others: list[Image.Image], preprocess, gen: torch.Generator) -> Image.Image:
    """A 2 x 2 grid (:func:`attngrad.evaluation.grids.canvas`, the pointing game's geometry) with ``image`` in a
    random cell and ``others`` (three images of other classes) in the rest, each mirrored half the time."""
    from attngrad.evaluation.grids import canvas, input_size

    cells = [image, *others]
    order = torch.randperm(4, generator=gen).tolist()
    flips = (torch.rand(4, generator=gen) < 0.5).tolist()
    seen = [preprocess.geometry(ImageOps.mirror(im) if f else im) for im, f in zip(cells, flips)]
    return canvas([seen[k] for k in order], input_size(preprocess), 2, preprocess.resample)


def _view(image: Image.Image, w: int, h: int, gen: torch.Generator) -> Image.Image:
    """A random crop of ``image`` with the aspect ``w / h`` (50-100 % of the largest such crop's area), mirrored half
    the time, resized to ``(w, h)``."""
    iw, ih = image.size
    u = torch.rand(4, generator=gen).tolist()
    scale = (0.5 + 0.5 * u[0]) ** 0.5
    cw, ch = (iw, iw * h / w) if iw * h / w <= ih else (ih * w / h, ih)
    cw, ch = max(1, round(cw * scale)), max(1, round(ch * scale))
    left, top = round(u[1] * (iw - cw)), round(u[2] * (ih - ch))
    image = image.crop((left, top, left + cw, top + ch))
    if u[3] < 0.5:
        image = ImageOps.mirror(image)
    return image.resize((w, h), Image.Resampling.BICUBIC)


def composite(images: list[Image.Image], gen: torch.Generator, size: int = 224) -> Image.Image:
    """Two images side by side or one above the other (the split at 35-65 % of the side, which image comes first
    at random), or four in a 2 x 2 grid; each part a random crop of its image with the part's aspect
    (:func:`_view`)."""
    out = Image.new("RGB", (size, size))
    if len(images) == 4:
        half = size // 2
        for k, im in enumerate(images):
            out.paste(_view(im, half, half, gen), ((k % 2) * half, (k // 2) * half))
        return out
    if len(images) != 2:
        raise ValueError("a composite holds 2 or 4 images")
    u = torch.rand(2, generator=gen).tolist()
    cut = round(size * (0.35 + 0.3 * u[0]))
    if u[1] < 0.5:  # side by side
        out.paste(_view(images[0], cut, size, gen), (0, 0))
        out.paste(_view(images[1], size - cut, size, gen), (cut, 0))
    else:  # one above the other
        out.paste(_view(images[0], size, cut, gen), (0, 0))
        out.paste(_view(images[1], size, size - cut, gen), (0, cut))
    return out


@torch.no_grad()
def _tower(model, pixels: torch.Tensor, classifier=None):
    """The vision tokens that become image tokens (N, K, D) of preprocessed ``pixels``, and with ``classifier`` (the
    ViT's own head, :func:`_classifier`) the locked ViT's class probabilities (N, 1000), else None."""
    tower = model.model.vision_tower
    out = tower(pixels.to(tower.device), output_hidden_states=True)
    hidden = out.hidden_states[model.config.vision_feature_layer]
    tokens = hidden if model.config.vision_feature_select_strategy == "full" else hidden[:, 1:]
    return tokens, None if classifier is None else classifier(out.last_hidden_state[:, 0]).softmax(-1)


@torch.no_grad()
def features(model, preprocess, paths: list[Path], mirror: bool, batch: int = 50, gen: torch.Generator | None = None,
             share: float = 1.0, grids: float = 0.0):
    """Vision tokens that become image tokens (N, K, D) and the ViT's own class probabilities (N, 1000)
    (``gen``: of random views, :func:`augment`; a share ``grids`` of them 2 x 2 grids, :func:`grid_view`, in which
    image ``i`` fills one random cell)."""
    head = _classifier().to(model.device)
    feats, probs = [], []
    for i in tqdm(range(0, len(paths), batch), desc=f"features{' (mirrored)' if mirror else ''}"):
        images = [Image.open(p).convert("RGB") for p in paths[i:i + batch]]
        if mirror:
            images = [ImageOps.mirror(im) for im in images]
        if gen is not None:
            pick = torch.rand(len(images), generator=gen) < grids
            images = [grid_view(im, [Image.open(paths[j]).convert("RGB") for j in _others(i + k, len(paths), gen)],
                                preprocess, gen) if g else augment(im, gen, share)
                      for k, (im, g) in enumerate(zip(images, pick.tolist()))]
        tokens, p = _tower(model, preprocess(images), head)
        feats.append(tokens)
        probs.append(p)
    return torch.cat(feats), torch.cat(probs)


def _others(i: int, n: int, gen: torch.Generator) -> list[int]:
    """Three random indices in ``range(n)`` other than ``i`` (the sample has one image per class: other classes)."""
    draw = torch.randperm(n - 1, generator=gen)[:3]
    return (draw + (draw >= i).long()).tolist()


def _classifier() -> torch.nn.Linear:
    """The locked ViT-Ti's own ImageNet head (on its final class token)."""
    from safetensors.torch import load_file

    from attngrad.vlm.load import VIT

    state = load_file(str(VIT / "model.safetensors"))
    head = torch.nn.Linear(state["classifier.weight"].shape[1], state["classifier.weight"].shape[0])
    head.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    return head.requires_grad_(False)


def name_embeddings(model, tokenizer, names: list[str]) -> torch.Tensor:
    table = model.get_input_embeddings().weight
    return torch.stack([table[tokenizer(" " + n, add_special_tokens=False)["input_ids"]].mean(0) for n in names]).detach()


def align(proj, feats: torch.Tensor, targets: torch.Tensor, *, epochs: int, lr: float, cls_weight: float,
          has_cls: bool, batch: int = 32) -> None:
    """Stage 1: every projected token towards its image's target embedding; the standardisation folded in after."""
    mu, sd = feats.mean((0, 1)), feats.std((0, 1)) + 1e-3
    x = (feats - mu) / sd
    scale = targets.norm(dim=-1).mean() ** 2
    opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="align projector")
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch):
            err = ((proj(x[idx]) - targets[idx][:, None]) ** 2).sum(-1)
            loss = err[:, 1:].mean() + cls_weight * err[:, 0].mean() if has_cls else err.mean()
            opt.zero_grad()
            (loss / scale).backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item() / scale:.3f}")
    bar.close()
    with torch.no_grad():  # W((x - mu) / sd) + b = (W / sd) x + (b - W (mu / sd))
        lin = proj.linear_1
        lin.bias.sub_(lin.weight @ (mu / sd))
        lin.weight.div_(sd)


def sequences(tokenizer, template: str, question: str, names: list[str]):
    before, after = template.split("<image>", 1)
    head = tokenizer(before.format(prompt=question), add_special_tokens=True)["input_ids"]
    tail = tokenizer(after.format(prompt=question), add_special_tokens=False)["input_ids"]
    answers = [tokenizer(" " + n, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for n in names]
    return head, tail, answers


def prompt_embeds(model, head, tail, feats):
    """The prompt's input embeddings (B, T, D) with the projected image tokens in place."""
    emb = model.get_input_embeddings()
    dev = feats.device
    img = model.model.multi_modal_projector(feats)
    b = len(feats)
    h = emb(torch.tensor(head, dtype=torch.long, device=dev))[None].expand(b, -1, -1)
    t = emb(torch.tensor(tail, dtype=torch.long, device=dev))[None].expand(b, -1, -1)
    return torch.cat([h, img, t], dim=1)


def _answer_cross_entropy(model, head, tail, feats, answers) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence and answer position (B, L): the cross-entropy of the answer's token (teacher-forced,
    right-padded) and whether the position holds one."""
    emb = model.get_input_embeddings()
    x = prompt_embeds(model, head, tail, feats)
    longest = max(len(a) for a in answers)
    ids = torch.zeros((len(answers), longest), dtype=torch.long, device=x.device)
    real = torch.zeros((len(answers), longest), dtype=torch.bool, device=x.device)
    for i, a in enumerate(answers):
        ids[i, :len(a)] = torch.tensor(a)
        real[i, :len(a)] = True
    start = x.shape[1]
    x = torch.cat([x, emb(ids)], dim=1)
    mask = torch.cat([torch.ones((len(answers), start), dtype=torch.long, device=x.device), real.long()], dim=1)
    hidden = model.model.language_model(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
    logits = model.lm_head(hidden[:, start - 1:start - 1 + longest]).float()
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none"), real


def answer_loss(model, head, tail, feats, answers) -> torch.Tensor:
    """Cross-entropy of the answers' tokens, the mean over every answer token of the batch."""
    ce, real = _answer_cross_entropy(model, head, tail, feats, answers)
    return ce[real].mean()


def answer_losses(model, head, tail, feats, answers) -> torch.Tensor:
    """Each sequence's own answer loss (B,): the mean cross-entropy over its answer's tokens (teacher-forced)."""
    ce, real = _answer_cross_entropy(model, head, tail, feats, answers)
    return (ce * real).sum(1) / real.sum(1)


def multi_name_loss(model, head, tail, feats, answers: list[list[list[int]]]) -> torch.Tensor:
    """The multi-name answer loss: per image (``feats[i]``), the mean over the names present (``answers[i]``, each
    " <name><eos>" as token ids) of that name's answer loss; the mean over the images. So the first answer token is
    pushed towards every present name alike."""
    counts = torch.tensor([len(a) for a in answers], device=feats.device)
    per_name = answer_losses(model, head, tail, feats.repeat_interleave(counts, 0), [n for a in answers for n in a])
    image = torch.arange(len(answers), device=feats.device).repeat_interleave(counts)
    per_image = torch.zeros(len(answers), dtype=per_name.dtype, device=feats.device).index_add(0, image, per_name)
    return (per_image / counts).mean()


@torch.no_grad()
def answer(model, tokenizer, head, tail, feats, steps: int = 8) -> list[str]:
    """Greedy answers, with the key/value cache."""
    from transformers import DynamicCache

    emb = model.get_input_embeddings()
    x = prompt_embeds(model, head, tail, feats)
    cache = DynamicCache()
    out: list[list[int]] = [[] for _ in range(len(feats))]
    for _ in range(steps):
        hidden = model.model.language_model(inputs_embeds=x, past_key_values=cache, use_cache=True).last_hidden_state
        nxt = model.lm_head(hidden[:, -1]).argmax(-1)
        for i, t in enumerate(nxt.tolist()):
            out[i].append(t)
        x = emb(nxt)[:, None]
    eos = tokenizer.eos_token_id
    return [tokenizer.decode(o[: o.index(eos)] if eos in o else o) for o in out]


def accuracy(model, tokenizer, head, tail, feats, names, batch=50) -> tuple[float, list[str]]:
    said: list[str] = []
    for i in tqdm(range(0, len(names), batch), desc="greedy answers"):
        said += answer(model, tokenizer, head, tail, feats[i:i + batch])
    hits = sum(n.lower() in s.lower() for s, n in zip(said, names))
    return hits / max(len(names), 1), said


ANIMAL_QUESTION = "What animal is this?"
#: ImageNet's animal classes: indices 0-397
ANIMALS = 398


def teacher_draw(probs: torch.Tensor, gen: torch.Generator) -> list[int]:
    """One class per image drawn from the locked ViT's own class probabilities ``probs`` (N, C)."""
    return torch.multinomial(probs.float().cpu(), 1, generator=gen)[:, 0].tolist()


def erase(image: Image.Image, gen: torch.Generator) -> Image.Image:
    """Random erasing: one rectangle of 10-50 % of the area (aspect 1/3-3) painted the pointing game's grey."""
    from attngrad.evaluation.grids import BLANK

    w, h = image.size
    u = torch.rand(4, generator=gen).tolist()
    area, aspect = (0.1 + 0.4 * u[0]) * w * h, 3 ** (2 * u[1] - 1)
    ew, eh = min(w, round((area * aspect) ** 0.5)), min(h, round((area / aspect) ** 0.5))
    left, top = round(u[2] * (w - ew)), round(u[3] * (h - eh))
    image = image.copy()
    image.paste(Image.new("RGB", (ew, eh), BLANK), (left, top))
    return image


class Views(torch.utils.data.IterableDataset):
    """The views of the on-the-fly stage, one batch per step: ``(pixels, classes, animal)``, where ``classes[i]`` are
    the classes shown in view ``i`` (one for a single image, two or four for a composite) and ``animal`` says whether
    the step asks "What animal is this?" (about animal classes only). A DataLoader's workers each draw their own
    batches (generator seeded by ``seed`` and the worker's number)."""

    def __init__(self, train, preprocess, args, steps: int):
        self.train, self.preprocess, self.args, self.steps = train, preprocess, args, steps
        self.animals = [i for i, r in enumerate(train) if r[0] < ANIMALS]
        self._images: dict[int, Image.Image] = {}

    def _image(self, j: int) -> Image.Image:
        if j not in self._images:
            self._images[j] = Image.open(self.train[j][2]).convert("RGB")
        return self._images[j]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        gen = torch.Generator().manual_seed(self.args.seed + 1000 * worker)
        for _ in range(worker, self.steps, workers):
            yield self.batch(gen)

    def batch(self, gen: torch.Generator):
        a = self.args
        animal = bool(torch.rand(1, generator=gen).item() < a.animal_question) and len(self.animals) >= 4
        pool = self.animals if animal else list(range(len(self.train)))
        images, classes = [], []
        for k in range(a.batch_size):
            if k < round(a.batch_size * a.composites):
                many = 4 if torch.rand(1, generator=gen).item() < a.composite_grids else 2
                picked = [pool[j] for j in torch.randperm(len(pool), generator=gen)[:many].tolist()]
                image = composite([self._image(j) for j in picked], gen)
            else:
                picked = [pool[int(torch.randint(len(pool), (1,), generator=gen))]]
                image = augment(self._image(picked[0]), gen, a.augment)
            if torch.rand(1, generator=gen).item() < a.erase:
                image = erase(image, gen)
            images.append(image)
            classes.append([self.train[j][0] for j in picked])
        return self.preprocess(images), classes, animal


def composite_stage(model, tokenizer, preprocess, proj, train, names, args, steps: int, save) -> None:
    """The answer stage on views made at every step (:class:`Views`): whole (or augmented) single images and
    multi-object composites (:func:`composite`), a share ``--erase`` of them with a grey rectangle (:func:`erase`),
    with the multi-name answer loss (:func:`multi_name_loss`). A share ``--animal-question`` of the steps asks
    "What animal is this?" about animal classes only (the other steps: ``--question``, any class). With
    ``--teacher T`` each view's answer is, with probability T, one class drawn from the locked ViT's own class
    probabilities on that view (:func:`teacher_draw`; any of the ``names``, indexed by class), else its label(s).
    ``save`` is called after every epoch's worth of steps (a checkpoint)."""
    template = stand_in_settings()["template"]
    asked = {q: sequences(tokenizer, template, q, names) for q in (args.question, ANIMAL_QUESTION)}
    classifier = _classifier().to(model.device) if args.teacher else None
    opt = torch.optim.AdamW(proj.parameters(), lr=args.answer_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.answer_lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    per_epoch = max(1, (len(train) + args.batch_size - 1) // args.batch_size)
    views = torch.utils.data.DataLoader(Views(train, preprocess, args, steps), batch_size=None,
                                        num_workers=args.workers, persistent_workers=False)
    for step, (pixels, classes, animal) in enumerate(tqdm(views, total=steps, desc="views + multi-name loss")):
        head, tail, answers = asked[ANIMAL_QUESTION if animal else args.question]
        tokens, probs = _tower(model, pixels, classifier)
        if classifier is not None:
            taught = (torch.rand(len(classes), generator=gen) < args.teacher).tolist()
            classes = [[c] if t else shown for t, c, shown in zip(taught, teacher_draw(probs, gen), classes)]
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = multi_name_loss(model, head, tail, tokens, [[answers[c] for c in shown] for shown in classes])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % per_epoch == 0 or step + 1 == steps:
            save()
        if step % 10 == 0:
            tqdm.write(f"step {step} loss {loss.item():.3f} ({'animal' if animal else 'photo'} question)")


def command_line(ap: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command that repeats this run: ``--data ../shared/data`` and every option that differs from its default
    (``--out`` and ``--report``, where the run writes, left out; other paths as given)."""
    parts = ["python scripts/train_vlm.py", "--data ../shared/data"]
    for action in ap._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "data", "out", "report") or value == action.default:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            parts.append(action.option_strings[0 if value else 1])
        else:
            parts.append(f"{action.option_strings[0]} {value:g}" if isinstance(value, float)
                         else f"{action.option_strings[0]} {shlex.quote(str(value))}")
    return " ".join(parts)


def parser() -> argparse.ArgumentParser:
    """The command line's options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--held-out", type=int, default=20,
                    help="hold out every Nth image, from the (N/2)th on: indices 10, 30, ... for 20 (0: train on all)")
    ap.add_argument("--align-epochs", type=int, default=8)
    ap.add_argument("--align-lr", type=float, default=1e-3)
    ap.add_argument("--cls-weight", type=float, default=3.0)
    ap.add_argument("--answer-epochs", type=float, default=8.0)
    ap.add_argument("--answer-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="the answer stage under bfloat16 autocast (about 3x faster on CPUs with AMX)")
    ap.add_argument("--question", default="What is in this photo?")
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--report", type=Path, default=None, help="JSON file for time and accuracies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N images only (a smoke test)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this projector (skips the alignment stage): a second run with --augment")
    ap.add_argument("--augment", type=float, default=0.0,
                    help="answer stage: this share of the images seen as new random views every epoch (crops, mirrors, "
                         "half resolution); the others whole (0: each image or its mirror image)")
    ap.add_argument("--grids", type=float, default=0.0,
                    help="answer stage: this share of the images seen inside a 2 x 2 grid of training images of other "
                         "classes (a random cell; the answer stays the image's class), so that a class name is tied to "
                         "where its image is; needs --augment for the rest (0 to keep them whole)")
    ap.add_argument("--composites", type=float, default=0.0,
                    help="answer stage: this share of each batch multi-object composites (two training images of "
                         "different classes side by side or one above the other, or four in a 2 x 2 grid: "
                         "--composite-grids) answered with the multi-name loss (the mean of the names' answer losses); "
                         "the rest single images (--augment of them random views). Needs --init")
    ap.add_argument("--composite-grids", type=float, default=0.0,
                    help="with --composites: this share of the composites 2 x 2 grids of four classes")
    ap.add_argument("--animal-question", type=float, default=0.0,
                    help=f"with --composites / --teacher: this share of the steps asks '{ANIMAL_QUESTION}' about animal "
                         "classes only")
    ap.add_argument("--teacher", type=float, default=0.0,
                    help="views made every step (as --composites): this share of the images answered with one class "
                         "drawn from the locked ViT's own class probabilities on the view shown, the rest with their "
                         "labels. Needs --init")
    ap.add_argument("--erase", type=float, default=0.0,
                    help="with --composites / --teacher: this share of the views with a grey rectangle of 10-50 %% of "
                         "the area (random erasing)")
    ap.add_argument("--workers", type=int, default=0,
                    help="with --composites / --teacher: processes that make the views (0: the training process)")
    ap.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:1, ...")
    ap.add_argument("--eval-limit", type=int, default=None, help="greedy answers of the first N training images only")
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    for name in ("augment", "grids", "composites", "composite_grids", "animal_question", "teacher", "erase"):
        if not 0 <= getattr(args, name) <= 1:
            ap.error(f"--{name.replace('_', '-')} is a share, in [0, 1]")
    if args.workers < 0:
        ap.error("--workers is a number of processes, 0 or more")
    views = bool(args.composites or args.teacher)  # the stage that makes its views at every step
    if views and args.grids:
        ap.error("--composites / --teacher and --grids are two different stages; give one")
    if views and args.init is None:
        ap.error("--composites and --teacher need --init (a projector to start from)")
    if not views and (args.composite_grids or args.animal_question or args.erase or args.workers):
        ap.error("--composite-grids, --animal-question, --erase and --workers shape the --composites / --teacher "
                 "stage; give one of them")
    torch.manual_seed(args.seed)
    started = time.time()
    model, tokenizer, preprocess = build_stand_in(projector=False)
    model.to(args.device)
    settings = stand_in_settings()
    rows = read_classes(args.data)[: args.limit]
    every = args.held_out
    train = [r for r in rows if not every or r[0] % every != every // 2]
    held = [r for r in rows if every and r[0] % every == every // 2]
    for p in model.parameters():
        p.requires_grad_(False)
    proj = model.model.multi_modal_projector
    for p in proj.parameters():
        p.requires_grad_(True)
    model.config.text_config._attn_implementation = "sdpa"  # training only: no maps needed
    paths = [r[2] for r in train]
    plain, p_probs = features(model, preprocess, paths, False)  # the accuracy's images
    # the mirror images serve the alignment and the answer stage on fixed features only (not --init with views)
    fixed = args.init is None or not (views or args.augment or args.grids)
    mirrored, m_probs = features(model, preprocess, paths, True) if fixed else (None, None)
    names = [r[1] for r in train]
    if args.init is None:
        table = name_embeddings(model, tokenizer, [r[1] for r in read_classes(args.data)])
        onehot = torch.nn.functional.one_hot(torch.tensor([r[0] for r in train]), table.shape[0]).float()
        onehot = onehot.to(table.device)
        targets = torch.cat([(0.5 * onehot + 0.5 * p_probs) @ table, (0.5 * onehot + 0.5 * m_probs) @ table])
        align(proj, torch.cat([plain, mirrored]), targets, epochs=args.align_epochs, lr=args.align_lr,
              cls_weight=args.cls_weight, has_cls=settings["vision_feature_select_strategy"] == "full")
    else:
        from safetensors.torch import load_file

        proj.load_state_dict({k: v.float() for k, v in load_file(str(args.init)).items()})
    aligned = time.time() - started
    head, tail, answers = sequences(tokenizer, settings["template"], args.question, names)
    n = len(names)
    steps = int(args.answer_epochs * ((n + args.batch_size - 1) // args.batch_size))
    if views and steps:
        args.out.mkdir(parents=True, exist_ok=True)

        def save_checkpoint() -> None:
            from safetensors.torch import save_file

            save_file({k: v.detach().half().contiguous() for k, v in proj.state_dict().items()},
                      str(args.out / "checkpoint.safetensors"))

        composite_stage(model, tokenizer, preprocess, proj, train, [r[1] for r in read_classes(args.data)], args, steps,
                        save_checkpoint)
    elif steps:
        opt = torch.optim.AdamW(proj.parameters(), lr=args.answer_lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.answer_lr, total_steps=steps, pct_start=0.1)
        bar = tqdm(total=steps, desc="answer loss")
        view_gen = torch.Generator().manual_seed(args.seed)
        while bar.n < steps:
            order = torch.randperm(n)
            if args.augment or args.grids:
                feats, _ = features(model, preprocess, paths, False, gen=view_gen, share=args.augment,
                                    grids=args.grids)
            else:
                flip = torch.rand(n) < 0.5  # each image or its mirror image, drawn per epoch
                feats = torch.where(flip[:, None, None], mirrored, plain)
            for idx in order.split(args.batch_size):
                if bar.n >= steps:
                    break
                with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=args.bf16):
                    loss = answer_loss(model, head, tail, feats[idx], [answers[j] for j in idx.tolist()])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
    train_time = time.time() - started
    proj.requires_grad_(False)
    k = args.eval_limit or n
    train_acc, said = accuracy(model, tokenizer, head, tail, plain[:k], names[:k])
    held_acc = None
    if held:
        held_feats, _ = features(model, preprocess, [r[2] for r in held], False)
        held_acc, _ = accuracy(model, tokenizer, head, tail, held_feats, [r[1] for r in held])
    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.detach().half().contiguous() for k, v in proj.state_dict().items()}, str(args.out / "projector.safetensors"))
    (args.out / "vlm.json").write_text(json.dumps(settings, indent=1) + "\n")
    report = {
        "train_images": len(train), "held_out_images": len(held), "align_epochs": args.align_epochs,
        "answer_epochs": args.answer_epochs, "batch_size": args.batch_size, "answer_lr": args.answer_lr,
        "seconds_align": round(aligned, 1), "seconds": round(train_time, 1),
        "train_accuracy": round(train_acc, 4), "train_evaluated": k,
        "held_out_accuracy": None if held_acc is None else round(held_acc, 4), "question": args.question,
        "projector_bytes": (args.out / "projector.safetensors").stat().st_size,
        "examples": [{"class": c, "answer": s} for c, s in list(zip(names, said))[:10]],
        "init": None if args.init is None else args.init.name, "augment": args.augment, "grids": args.grids,
        "composites": args.composites, "composite_grids": args.composite_grids, "animal_question": args.animal_question,
        "teacher": args.teacher, "erase": args.erase, "device": str(model.device),
        "command": command_line(ap, args),
    }
    print(json.dumps(report, indent=1))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
