"""``/api/explain-text``: word scores of a text with a sentence encoder (``attngrad[text]``)."""

from __future__ import annotations

from fastapi import APIRouter, Form

from .. import work
from ..cache import key_of
from ..problems import http_error
from ..render import is_signed, legend
from ..schemas import ERRORS, TextResponse
from ..service import ExplorerDep

router = APIRouter(prefix="/api", tags=["text"])


@router.post("/explain-text", response_model=TextResponse, responses={503: ERRORS[503]})
async def explain_text(
    ex: ExplorerDep,
    text: str = Form("", description="the text to explain"),
    against: str | None = Form(None, description="similarity: the text to compare with"),
    labels: str | None = Form(None, description="zero-shot: label descriptions, comma-separated"),
    methods: str | None = Form(None, description="comma-separated method names (default: complete,gae)"),
    loss: str | None = Form(None, description="logit, normdiff, diff, ratio (default: logit; normdiff with a contrast)"),
    contrast: str | None = Form(None, description="zero-shot: a second label, or top2 (the runner-up)"),
) -> dict:
    """Word scores of one text with a sentence encoder (MiniLM), every method from one pass.

    Similarity (``against``): why ``cos(e(text), e(against))`` is what it is, with the words of
    ``against`` explained the other way (``against_words``). Zero-shot (``labels``): the
    predicted label (``predicted``), explained with ``logit`` or against ``contrast`` (``normdiff``).
    Each word has its raw ``score`` (summed over its word pieces, sign kept) and ``normalized``,
    ``S / max|S|`` over the text's words (the colours of the UI); each method says whether its
    sign means support/oppose (``signed``, ``legend``).
    """
    if not text.strip():
        raise http_error(422, "the text is empty; type at least one word", field="text")
    against = against if against and against.strip() else None
    labels = labels if labels and labels.strip() else None
    contrast = contrast.strip() if contrast and contrast.strip() else None
    if (against is None) == (labels is None):
        raise http_error(
            422,
            "give either a text to compare with ('against') or comma-separated labels ('labels')",
            field="against" if against is None else "labels",
        )
    loss_name = ex.check_loss(loss, contrast)
    text_explainer = await ex.text_explainer()
    names = ex.check_text_methods(methods)
    key = key_of("explain-text", text, against, labels, names, loss_name, contrast)
    result = await ex.cached(
        key, work.explain_text, text_explainer, text, against=against, labels=labels, methods=names,
        loss=loss_name, contrast=contrast,
    )
    return {
        **result,
        "methods": [{**m, "signed": is_signed(m["name"]), "legend": legend(m["name"])} for m in result["methods"]],
    }
