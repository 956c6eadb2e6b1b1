"""A LiT-shaped model on tiny random towers: ViT (pre-logit CLS) + mean-pooled BERT, linear projections.

Reference per (image, text) pair, one at a time and unpadded: Hugging Face's own forward for
``A(l)``, autograd for ``grad A(l)`` of the cosine, loops over layers and heads; the pooled
text's map is ``mean_{i real} (R - I)[i, :]`` (every real token's row, identity removed).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attngrad import AttngradError

from .conftest import SEP, TEXTS
from .test_clip_methods import WEIGHTS, reference_rollout


@pytest.fixture(scope="module")
def lit_like(tokenizer):
    from .conftest import lit_like as build

    return build(tokenizer)


def _reference(parts, tokenizer, pixel, text, tower, method):
    vit, bert, img_proj, txt_proj = parts
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    vout = vit(pixel_values=pixel[None], output_attentions=True)
    tout = bert(input_ids=ids, output_attentions=True)
    img = img_proj(vout.last_hidden_state[0, 0])
    txt = txt_proj(tout.last_hidden_state[0].mean(dim=0))
    if tower == "image":
        cos = F.cosine_similarity(img, txt.detach(), dim=0)
        maps = vout.attentions
    else:
        cos = F.cosine_similarity(txt, img.detach(), dim=0)
        maps = tout.attentions
    grads = torch.autograd.grad(cos, maps)
    a = [m[0].detach() for m in maps]
    g = [x[0] for x in grads]
    renorm = method == "rollout"
    if tower == "image":
        return cos.detach(), reference_rollout(a, g, WEIGHTS[method], 0, renorm)[1:].reshape(4, 4)
    n = ids.shape[1]
    rows = [reference_rollout(a, g, WEIGHTS[method], i, renorm) - torch.eye(n, dtype=a[0].dtype)[i] for i in range(n)]
    scores = sum(rows) / n
    content = (ids[0] != SEP) & (ids[0] != 2)
    return cos.detach(), scores * content


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.parametrize("method", ["complete", "gae", "rollout"])
def test_lit_shaped_towers_match_reference(lit_like, tokenizer, pixels, tower, method):
    explainer, parts = lit_like
    res = explainer.explain(pixels, TEXTS, method=method, tower=tower)
    for b in range(2):
        for k, text in enumerate(TEXTS):
            cos, want = _reference(parts, tokenizer, pixels[b], text, tower, method)
            torch.testing.assert_close(res.similarity[b, k], cos, rtol=1e-9, atol=1e-12)
            got = res.maps[b, k]
            if tower == "text":
                assert got[want.shape[0]:].abs().sum() == 0
                got = got[: want.shape[0]]
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


def test_pooled_text_tower_refuses_one_row_methods(lit_like, pixels):
    explainer, _ = lit_like
    for method in ("raw_attention", "gradeclip", "attention_eclip"):
        with pytest.raises(AttngradError, match="mean-pools"):
            explainer.explain(pixels, TEXTS, method=method, tower="text")
    # the image tower of the same model takes them
    res = explainer.explain_methods(pixels, TEXTS, ["gradeclip", "attention_eclip"])
    torch.testing.assert_close(res["gradeclip"].maps, res["attention_eclip"].maps, rtol=1e-9, atol=1e-12)
