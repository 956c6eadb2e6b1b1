"""scripts/train_vlm.py's on-the-fly stage: the multi-object composites and the multi-name answer loss, on a tiny
random LLaVA against sums written here from the definition (one sequence, one token at a time); the views' labels,
random erasing and the ViT teacher's answers."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_vlm  # noqa: E402
from train_vlm import Views, answer_loss, composite, erase, multi_name_loss, sequences, teacher_draw  # noqa: E402

from .conftest import TEMPLATE, tiny_llava  # noqa: E402

NAMES = ["zebra", "horse elephant", "cat", "dog the"]  # answers of one and two words


@pytest.fixture(scope="module")
def parts(tokenizer):
    model = tiny_llava("vit", strategy="full")
    head, tail, answers = sequences(tokenizer, TEMPLATE, "what is in this photo", NAMES)
    feats = torch.randn(3, 17, 16, generator=torch.Generator().manual_seed(1))  # 16 patches + the class token
    return model, head, tail, answers, feats


def _by_hand(model, head, tail, feat, answer) -> torch.Tensor:
    """One sequence alone: [head, projected image, tail, answer]; the mean of -log p(answer token t | before it)."""
    emb = model.get_input_embeddings()
    x = torch.cat([emb(torch.tensor(head)), model.model.multi_modal_projector(feat), emb(torch.tensor(tail)),
                   emb(torch.tensor(answer))])[None]
    logp = model.lm_head(model.model.language_model(inputs_embeds=x).last_hidden_state[0]).log_softmax(-1)
    start = len(head) + len(feat) + len(tail)
    return -torch.stack([logp[start - 1 + t, tok] for t, tok in enumerate(answer)]).mean()


def test_the_multi_name_loss_is_the_mean_over_the_names_present_of_their_answer_losses(parts):
    model, head, tail, answers, feats = parts
    present = [[answers[0], answers[1]], [answers[2]], [answers[3], answers[0], answers[2], answers[1]]]
    got = multi_name_loss(model, head, tail, feats, present)
    want = torch.stack([torch.stack([_by_hand(model, head, tail, feats[i], a) for a in names]).mean()
                        for i, names in enumerate(present)]).mean()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # = the single-name losses computed one by one (the stage-2 loss of one answer)
    one_by_one = torch.stack([torch.stack([answer_loss(model, head, tail, feats[i:i + 1], [a]) for a in names]).mean()
                              for i, names in enumerate(present)]).mean()
    torch.testing.assert_close(got, one_by_one, rtol=1e-5, atol=1e-6)
    # its gradient reaches the projector (what the stage trains)
    model.zero_grad()
    multi_name_loss(model, head, tail, feats, present).backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    model.zero_grad()


def _colours(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy())


def test_composites_hold_each_image_in_its_own_part():
    red, blue = Image.new("RGB", (300, 200), (255, 0, 0)), Image.new("RGB", (150, 260), (0, 0, 255))
    green, white = Image.new("RGB", (90, 90), (0, 255, 0)), Image.new("RGB", (400, 300), (255, 255, 255))
    gen = torch.Generator().manual_seed(0)
    layouts = set()
    for _ in range(12):
        px = _colours(composite([red, blue], gen))
        assert px.shape == (224, 224, 3)
        is_red = (px == torch.tensor([255, 0, 0])).all(-1)
        assert (is_red | (px == torch.tensor([0, 0, 255])).all(-1)).all()  # nothing else on the canvas
        rows, cols = is_red.any(1), is_red.any(0)
        if cols.all():  # red above blue: whole rows, a cut at 35-65 %
            cut = int(rows.sum())
            assert is_red[:cut].all() and not is_red[cut:].any() and 78 <= cut <= 146
            layouts.add("above")
        else:  # red left of blue: whole columns
            cut = int(cols.sum())
            assert is_red[:, :cut].all() and not is_red[:, cut:].any() and 78 <= cut <= 146
            layouts.add("beside")
    assert layouts == {"above", "beside"}
    px = _colours(composite([red, blue, green, white], gen))
    for k, c in enumerate(((255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255))):
        top, left = (k // 2) * 112, (k % 2) * 112
        assert (px[top:top + 112, left:left + 112] == torch.tensor(c)).all(), k
    with pytest.raises(ValueError):
        composite([red, blue, green], gen)


GREY = (128, 128, 128)  # the pointing game's blank colour, what erase() paints
COLOURS = {3: (255, 0, 0), 10: (0, 0, 255), 50: (0, 255, 255), 200: (255, 0, 255), 500: (0, 255, 0),
           900: (255, 255, 0)}  # class -> its image's colour (3-200: animals)


def test_erase_paints_one_grey_rectangle_of_10_to_50_percent_and_leaves_the_rest():
    red = Image.new("RGB", (224, 160), (255, 0, 0))
    gen = torch.Generator().manual_seed(0)
    shares = []
    for _ in range(40):
        px = _colours(erase(red, gen))
        grey = (px == torch.tensor(GREY)).all(-1)
        assert (grey | (px == torch.tensor([255, 0, 0])).all(-1)).all()
        rows, cols = grey.any(1).nonzero()[:, 0], grey.any(0).nonzero()[:, 0]
        assert grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # one filled rectangle
        shares.append(grey.float().mean().item())
    assert 0.09 <= min(shares) and max(shares) <= 0.51 and max(shares) - min(shares) > 0.2
    assert (_colours(red) == torch.tensor([255, 0, 0])).all()  # the image given is not changed


def test_teacher_draw_follows_the_probabilities():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 1.0]]).repeat(4000, 1)
    drawn = torch.tensor(teacher_draw(probs, torch.Generator().manual_seed(0))).view(4000, 2)
    assert (drawn[:, 1] == 3).all()
    freq = torch.bincount(drawn[:, 0], minlength=4).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1, 0.0]), atol=0.025, rtol=0)


def _train(tmp_path) -> list:
    rows = []
    for c, colour in COLOURS.items():
        path = tmp_path / f"{c}.png"
        Image.new("RGB", (120 + c % 7, 100), colour).save(path)
        rows.append((c, f"class{c}", path))
    return rows


def _args(**kw) -> Namespace:
    base = dict(batch_size=8, composites=0.5, composite_grids=0.5, augment=1.0, erase=0.0, animal_question=0.0,
                seed=0, teacher=0.0, question="what is in this photo", answer_lr=1e-3, bf16=False, workers=0)
    return Namespace(**{**base, **kw})


def _seen_colours(images) -> torch.Tensor:
    """A preprocess for the tests: each view's set of colours, as a (N, 8, 3) tensor padded with -1."""
    out = torch.full((len(images), 8, 3), -1)
    for i, im in enumerate(images):
        found = torch.unique(_colours(im).reshape(-1, 3), dim=0)
        out[i, :len(found)] = found
    return out


@pytest.mark.parametrize("erased", [0.0, 1.0])
def test_views_are_labelled_with_the_classes_they_show(tmp_path, erased):
    views = Views(_train(tmp_path), _seen_colours, _args(erase=erased), steps=6)
    sizes, grids = set(), 0
    for colours, classes, animal in views:
        assert len(classes) == 8 and not animal
        for k, (seen, shown) in enumerate(zip(colours, classes)):
            seen = {tuple(c) for c in seen.tolist() if c[0] >= 0}
            want = {COLOURS[c] for c in shown} | ({GREY} if erased else set())
            assert len(set(shown)) == len(shown) and (len(shown) > 1) == (k < 4)
            # erasing may cover a whole part of a composite: then its colour is gone, never another one
            assert seen <= want and (seen == want if not erased else seen >= {GREY}), (k, seen, want)
            sizes.add(len(shown))
            grids += len(shown) == 4
    assert sizes == {1, 2, 4} and grids > 0
    # the animal question draws from the animal classes only (ImageNet's 0-397)
    for _, classes, animal in Views(_train(tmp_path), _seen_colours, _args(animal_question=1.0), steps=3):
        assert animal and {c for shown in classes for c in shown} <= {3, 10, 50, 200}


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_the_teacher_answers_with_a_class_drawn_from_the_vits_probabilities_on_the_view(tmp_path, tokenizer,
                                                                                         monkeypatch, share):
    """With --teacher 1 every view is answered with the class the ViT's probabilities on that view give (one-hot
    here: class 7 + the view's place), with --teacher 0 with its own classes (the multi-name answers)."""
    model = tiny_llava("vit", strategy="full")
    names = [f"n{c}" for c in range(1000)]
    names[7:15] = ["zebra", "horse", "elephant", "cat", "dog", "the", "a", "animal"]
    seen: list = []

    def fake_tower(_model, pixels, classifier):
        assert classifier is not None or share == 0
        probs = torch.nn.functional.one_hot(7 + torch.arange(len(pixels)), 1000).float()
        return torch.zeros(len(pixels), 17, 16), probs

    def fake_loss(_model, head, tail, feats, answers):
        seen.append(answers)
        return model.model.multi_modal_projector.linear_1.weight.sum() * 0

    monkeypatch.setattr(train_vlm, "_tower", fake_tower)
    monkeypatch.setattr(train_vlm, "_classifier", lambda: torch.nn.Identity())
    monkeypatch.setattr(train_vlm, "multi_name_loss", fake_loss)
    monkeypatch.setattr(train_vlm, "stand_in_settings", lambda: {"template": TEMPLATE})
    train = _train(tmp_path)
    args = _args(teacher=share)
    train_vlm.composite_stage(model, tokenizer, _seen_colours, model.model.multi_modal_projector, train, names, args,
                              2, lambda: None)
    _, _, answers = sequences(tokenizer, TEMPLATE, args.question, names)
    labels = [classes for _, classes, _ in Views(train, _seen_colours, args, steps=2)]
    assert len(seen) == 2
    for got, shown in zip(seen, labels):
        want = [[answers[7 + k]] for k in range(8)] if share else [[answers[c] for c in s] for s in shown]
        assert got == want


def test_the_report_command_repeats_the_run():
    """The report's command: --data as ../shared/data, every option away from its default (booleans by their
    flag, floats as given, text quoted), nothing where the run writes."""
    ap = train_vlm.parser()
    args = ap.parse_args(["--data", "/somewhere/data", "--out", "/tmp/o", "--report", "/tmp/r.json", "--teacher", "0.5",
                          "--no-bf16", "--init", "p.safetensors", "--seed", "3", "--question", "What animal is this?",
                          "--batch-size", "16"])
    assert train_vlm.command_line(ap, args) == (
        "python scripts/train_vlm.py --data ../shared/data --no-bf16 --question 'What animal is this?' --seed 3 "
        "--init p.safetensors --teacher 0.5")
    assert train_vlm.command_line(ap, ap.parse_args([])) == "python scripts/train_vlm.py --data ../shared/data"
