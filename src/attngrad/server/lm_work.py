"""The language-model work behind ``/api/lm/*``; everything here runs on the worker queue's thread.

It checks what needs the model (the prompt's length in tokens, the target and contrast
tokens: each :class:`~attngrad.errors.AttngradError` names its form ``field``, so the
route answers ``422`` with it), calls :meth:`attngrad.lm.LMExplainer.explain_methods` or
:meth:`~attngrad.lm.LMExplainer.explain_generation`, and turns the result into JSON-ready
token lists: raw ``score`` (sign kept) and ``normalized`` = ``S / max|S|`` over the shown
tokens (:func:`attngrad.lm.display.normalized`; ``hide_first`` leaves the first token,
often the attention sink, out of the colours, never out of the maths).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from ..errors import AttngradError
from ..lm import LMExplainer, signed
from ..lm.display import describe, normalized
from ..lm.explainer import RUNNER_UP, MultiTokenWarning

_TOP_K = re.compile(r"^top-?\d+$", re.IGNORECASE)

#: How many likely next tokens an explanation lists.
TOP_NEXT = 5


def legend(name: str) -> str:
    """What red (and blue) mean in a language-model method's token colours."""
    if signed(name):
        return "red supports the explained token, blue opposes it"
    return "red is magnitude (how much, not for or against); this method has no sign"


def check_prompt(lm: LMExplainer, prompt: str, max_tokens: int, new_tokens: int = 0) -> int:
    """The prompt's length in tokens, within ``max_tokens`` and the model's context (with room
    for ``new_tokens`` generated ones); :class:`AttngradError` naming ``prompt`` or ``max_new_tokens``."""
    n = len(lm.adapter.tokenize(prompt))
    if n == 0:
        raise AttngradError(f"the prompt ({prompt[:30]!r}) has no tokens the model knows", field="prompt")
    limit = min(max_tokens, lm.max_length)
    if n > limit:
        whose = "the model's context" if limit == lm.max_length else "this server's limit"
        raise AttngradError(f"the prompt has {n} tokens, more than {whose} of {limit}; shorten it", field="prompt")
    room = lm.max_length - n
    if new_tokens > room:
        raise AttngradError(
            f"the prompt has {n} tokens; with {new_tokens} new ones it would pass the model's context of "
            f"{lm.max_length}: generate at most {room}",
            field="max_new_tokens",
        )
    return n


def _check_token(lm: LMExplainer, spec: str | None, what: str, notes: list[str]) -> None:
    """A target or contrast given as text must be at least one token (a note when it is more)."""
    if spec is None or _TOP_K.match(spec.strip()) or spec.strip().lower() == RUNNER_UP:
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MultiTokenWarning)
        try:
            lm.token_id(spec, what)
        except AttngradError as err:
            raise AttngradError(str(err), field=what) from None
    notes.extend(str(w.message) for w in caught if issubclass(w.category, MultiTokenWarning))


def _contrast_error(err: AttngradError) -> AttngradError:
    """The library's "contrast equals the target" (found during the pass) names the contrast field."""
    if err.field is None and "contrast equals the target" in str(err):
        return AttngradError(str(err), field="contrast")
    return err


def _tokens(tokens: list[str], scores: list[float], hide_first: bool) -> list[dict[str, Any]]:
    return [{"text": t, "score": s, "normalized": v} for t, s, v in zip(tokens, scores, normalized(scores, hide_first))]


def explain(
    lm: LMExplainer,
    prompt: str,
    *,
    methods: list[str],
    target: str | None,
    contrast: str | None,
    loss: str,
    hide_first: bool,
    max_tokens: int,
) -> dict[str, Any]:
    """Every method from one pass of :meth:`~attngrad.lm.LMExplainer.explain_methods` over one prompt."""
    check_prompt(lm, prompt, max_tokens)
    notes: list[str] = []
    _check_token(lm, target, "target", notes)
    _check_token(lm, contrast, "contrast", notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MultiTokenWarning)  # already in the notes
        try:
            results = lm.explain_methods(prompt, methods, target=target, contrast=contrast, loss=loss)
        except AttngradError as err:
            raise _contrast_error(err) from None
    first = next(iter(results.values()))
    logits = first.logits[0].float()
    probs = logits.softmax(-1)
    top = probs.topk(min(TOP_NEXT, probs.shape[0]))
    t = int(first.targets[0])
    c = None if first.contrasts is None else int(first.contrasts[0])

    def token(i: int) -> dict[str, Any]:
        return {"text": lm.adapter.token_text([i])[0], "id": i, "logit": float(logits[i]), "probability": float(probs[i])}

    return {
        "task": "lm-explain",
        "prompt": prompt,
        "loss": first.loss,
        "target": token(t),
        "contrast": None if c is None else token(c),
        "next_tokens": [token(int(i)) for i in top.indices],
        "notes": notes,
        "hide_first": hide_first,
        "methods": [
            {
                "name": name,
                "title": describe(res, 0),
                "signed": signed(name),
                "legend": legend(name),
                "tokens": _tokens(res.tokens[0], res.scores(0).tolist(), hide_first),
            }
            for name, res in results.items()
        ],
    }


def explain_generation(
    lm: LMExplainer,
    prompt: str,
    *,
    method: str,
    max_new_tokens: int,
    contrast: str | None,
    loss: str,
    hide_first: bool,
    max_tokens: int,
) -> dict[str, Any]:
    """Greedy generation, every generated token explained over every earlier token
    (:meth:`~attngrad.lm.LMExplainer.explain_generation`): one token list per generated token."""
    check_prompt(lm, prompt, max_tokens, max_new_tokens)
    notes: list[str] = []
    _check_token(lm, contrast, "contrast", notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MultiTokenWarning)
        try:
            gen = lm.explain_generation(prompt, max_new_tokens=max_new_tokens, method=method, loss=loss, contrast=contrast)
        except AttngradError as err:
            raise _contrast_error(err) from None
    steps = []
    for k, token in enumerate(gen.generated):
        pairs = gen.token_scores(k)
        steps.append({
            "token": token,
            "probability": float(gen.logits[k].float().softmax(-1).max()),  # greedy: the most likely token
            "tokens": _tokens([t for t, _ in pairs], [s for _, s in pairs], hide_first),
        })
    return {
        "task": "lm-generation",
        "prompt": prompt,
        "method": gen.method,
        "loss": gen.loss,
        "contrast": contrast,
        "signed": signed(gen.method),
        "legend": legend(gen.method),
        "prompt_tokens": gen.tokens[: gen.prompt_length],
        "generated": gen.generated,
        "text": gen.text,
        "notes": notes,
        "hide_first": hide_first,
        "steps": steps,
    }
