"""scripts/train_vlm.py's composite stage: the multi-object composites and the multi-name answer loss, on a tiny
random LLaVA against sums written here from the definition (one sequence, one token at a time)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from train_vlm import answer_loss, composite, multi_name_loss, sequences  # noqa: E402

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
