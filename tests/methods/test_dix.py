"""DIX against an independent computation from the authors' ``get_dix_vit`` (dix-cikm23/dix).

The reference runs the test's own forward pass of the tiny ViT (``ref_forward``) for ONE image
and ONE alpha at a time, with block ``b``'s attention replaced by ``alpha · A``, takes the
gradient of the target logit with autograd, and forms ``max(grad ⊙ A, 0)``, the step and head
means, the row-normalised rollout and the sum over blocks by explicit loops.
"""

from __future__ import annotations

import pytest
import torch

from attngrad import Explainer
from attngrad.errors import AttngradError
from attngrad.methods import get_method

from .test_rivals import _timm_copy_of_hf, ref_forward

STEPS = 4


def ref_dix(model, pixels, target, blocks=(1, 2), steps=STEPS, own_maps=False):
    with torch.no_grad():
        _, plain, _, _ = ref_forward(model, pixels)
    layers, heads, n = len(plain), plain[0].shape[0], plain[0].shape[-1]
    total = torch.zeros(n)
    for b in blocks:
        layer = layers - b
        source = plain[layer] if own_maps else plain[-1]
        cams = [torch.zeros(n, n) for _ in range(layers)]
        for s in range(steps + 1):
            scaled = (source * (s / steps)).clone().requires_grad_(True)
            logits, attns, _, _ = ref_forward(model, pixels, override={layer: scaled})
            grads = torch.autograd.grad(logits[target], attns)
            for k in range(layers):
                for h in range(heads):
                    cams[k] += (grads[k][h] * attns[k][h].detach()).clamp(min=0) / (heads * (steps + 1))
        joint = None
        for k in range(layers):
            m = cams[k] + torch.eye(n)
            for i in range(n):
                m[i] = m[i] / m[i].sum()
            joint = m if joint is None else m @ joint
        total += joint[0]
    return total[1:]


@pytest.mark.parametrize("batch_size", [4, 64])  # one image per pass (4 < steps + 1), all three in one pass
@pytest.mark.parametrize("options", [{}, {"blocks": (1,)}, {"blocks": (2, 3), "own_maps": True}])
def test_matches_the_authors_equations(tiny_vit, tiny_explainer, tiny_pixels, options, batch_size):
    targets = [1, 3, 0]
    method = get_method("dix", steps=STEPS, batch_size=batch_size, **options)
    res = tiny_explainer.explain(tiny_pixels, target=targets, method=method)
    assert res.maps.shape == (3, 4, 4)
    for b, t in enumerate(targets):
        expected = ref_dix(tiny_vit, tiny_pixels[b : b + 1], t, steps=STEPS, **options)
        torch.testing.assert_close(res.maps[b].flatten(), expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_the_scaled_map_matters(tiny_vit, tiny_explainer, tiny_pixels):
    """own_maps changes block 2's map (it replaces block L-2 by its own map, not the last one's)."""
    authors = tiny_explainer.explain(tiny_pixels[:1], target=1, method=get_method("dix", blocks=(2,), steps=STEPS))
    own = tiny_explainer.explain(tiny_pixels[:1], target=1,
                                 method=get_method("dix", blocks=(2,), steps=STEPS, own_maps=True))
    assert (authors.maps - own.maps).abs().max() > 1e-3 * own.maps.abs().max()


def test_batched_equals_one_by_one_and_timm_equals_hf(tiny_vit, tiny_explainer, tiny_pixels):
    method = get_method("dix", steps=STEPS, batch_size=10)  # two images per pass, then one
    together = tiny_explainer.explain(tiny_pixels, target=[1, 3, 0], method=method).maps
    for b, t in enumerate([1, 3, 0]):
        alone = tiny_explainer.explain(tiny_pixels[b : b + 1], target=t, method=method).maps[0]
        torch.testing.assert_close(together[b], alone, rtol=1e-5, atol=1e-7)
    from_timm = Explainer(_timm_copy_of_hf(tiny_vit)).explain(tiny_pixels, target=[1, 3, 0], method=method).maps
    torch.testing.assert_close(from_timm, together, rtol=0, atol=1e-5)


def test_defaults_and_bad_options(tiny_explainer, tiny_pixels):
    dix = get_method("dix")
    assert (dix.blocks, dix.steps, dix.own_maps) == ((1, 2), 10, False)
    with pytest.raises(AttngradError, match="steps"):
        get_method("dix", steps=0)
    with pytest.raises(AttngradError, match="counted from the end"):
        get_method("dix", blocks=(0,))
    with pytest.raises(AttngradError, match="block 4 from the end does not exist"):
        tiny_explainer.explain(tiny_pixels[:1], method=get_method("dix", blocks=(4,)))  # a 3-layer model
