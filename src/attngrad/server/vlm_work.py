"""The vision-language work behind ``/api/vlm/*``; everything here runs on the worker queue's thread.

One call of :meth:`attngrad.vlm.VLMExplainer.explain_methods` serves every (method, reading)
pair of a request (one forward and one backward pass); the model's greedy answer comes from
:meth:`~attngrad.vlm.VLMExplainer.generate`. Each map is sent raw (``map``, sign kept) and as an
overlay on the image the model saw (:func:`attngrad.viz.overlay`, as the image tab draws them:
signed maps in the signed colour map, magnitudes min-max); the prompt's text tokens (image
tokens left out: they are the map) carry their raw ``score`` and ``normalized`` = ``S / max|S|``
(:func:`attngrad.lm.display.normalized`), as the language-model tab colours them.
"""

from __future__ import annotations

from typing import Any

from .. import viz
from ..errors import AttngradError
from ..lm.display import normalized
from ..vlm import VLMExplainer
from ..vlm.explainer import SIGNED
from .render import data_url, png

#: How many likely next tokens an explanation lists.
TOP_NEXT = 5


def signed(name: str) -> bool:
    """Whether a vision-language method's sign means support/oppose."""
    return name in SIGNED


def legend(name: str) -> str:
    """What red (and blue) mean in a vision-language method's colours."""
    if signed(name):
        return "red supports the explained word, blue opposes it"
    return "red is magnitude (how much, not for or against); this method has no sign"


def _field_error(err: AttngradError) -> AttngradError:
    """Name the form field of the library's token errors (found during the pass)."""
    text = str(err)
    if err.field is None:
        if "contrast equals the target" in text or text.startswith("contrast"):
            return AttngradError(text, field="contrast")
        if text.startswith("target"):
            return AttngradError(text, field="target")
    return err


def _tokens(pairs: list[tuple[str, float]]) -> list[dict[str, Any]]:
    shown = [(t, s) for t, s in pairs if t != "<image>"]
    values = normalized([s for _, s in shown])
    return [{"text": t, "score": s, "normalized": v} for (t, s), v in zip(shown, values)]


def explain(
    vlm: VLMExplainer,
    picture: Any,
    prompt: str,
    *,
    methods: list[str],
    readings: list[str],
    target: str | None,
    contrast: str | None,
    loss: str,
    answer_tokens: int,
) -> dict[str, Any]:
    """Every (method, reading) pair from one pass over one image and question, with the greedy answer."""
    pixels = vlm.pixels(picture)
    shown = vlm.preprocess.geometry(picture) if vlm.preprocess is not None else picture
    try:
        results = vlm.explain_methods(pixels, prompt, methods, readings=readings, target=target, contrast=contrast,
                                      loss=loss)
    except AttngradError as err:
        raise _field_error(err) from None
    answer = vlm.generate(pixels, prompt, max_new_tokens=answer_tokens) if answer_tokens > 0 else []
    tokenizer = vlm.adapter.tokenizer
    first = next(iter(results.values()))
    logits = first.logits[0].float()
    probs = logits.softmax(-1)
    top = probs.topk(min(TOP_NEXT, probs.shape[0]))

    def token(i: int) -> dict[str, Any]:
        return {"text": vlm.adapter.token_text([i])[0], "id": i, "logit": float(logits[i]), "probability": float(probs[i])}

    entries = []
    for (name, reading), res in results.items():
        raw = res.maps[0].detach().float().cpu()
        entries.append({
            "name": name,
            "reading": reading,
            "signed": signed(name),
            "legend": legend(name),
            "grid": list(raw.shape),
            "map": raw.tolist(),
            "overlay": data_url(png(viz.overlay(shown, raw.numpy(), signed=signed(name)))),
            "tokens": _tokens(res.token_scores(0)),
        })
    return {
        "task": "vlm-explain",
        "prompt": prompt,
        "loss": first.loss,
        "target": token(int(first.targets[0])),
        "contrast": None if first.contrasts is None else token(int(first.contrasts[0])),
        "next_tokens": [token(int(i)) for i in top.indices],
        "answer": tokenizer.decode(answer, skip_special_tokens=True),
        "answer_tokens": vlm.adapter.token_text(answer) if answer else [],
        "results": entries,
    }

