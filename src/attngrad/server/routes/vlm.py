"""``/api/vlm/*``: the vision-language tab, why a LLaVA-style model says its next word about an image.

The same view as ``attngrad explain-vlm``: a signed map over the image's patches and scores over
the question's tokens, per method and reading, every pair from one pass (``/api/vlm/explain``),
with the model's greedy answer. The model (``attngrad serve --vlm-model FOLDER_OR_HUB_NAME``, else
the shipped stand-in when attngrad ships it) loads on first use; ``/api/vlm/info`` says whether
one is configured and, when not, how to give one (the explain route then answers 409).
"""

from __future__ import annotations

from fastapi import APIRouter, Form

from ...vlm import READINGS, VLM_METHODS
from .. import vlm_work
from ..cache import key_of
from ..render import tab_info
from ..schemas import ERRORS, ErrorResponse, VLMExplainResponse, VLMInfo
from ..service import ExplorerDep
from ..settings import DEFAULT_VLM_METHODS, DEFAULT_VLM_PROMPT, DEFAULT_VLM_READINGS
from .images import ImageFile, ImageId, SampleId

router = APIRouter(prefix="/api/vlm", tags=["vision-language model"])


@router.get("/info", response_model=VLMInfo)
async def info(ex: ExplorerDep) -> dict:
    """Whether a vision-language model is configured (else why, and how to give one), its methods and readings."""
    return {
        **tab_info(missing=ex.vlm_missing, model=ex.vlm_name, loaded=ex.vlm_loaded is not None,
                   methods=list(VLM_METHODS), signed=vlm_work.signed, legend=vlm_work.legend),
        "default_methods": list(DEFAULT_VLM_METHODS),
        "readings": list(READINGS),
        "default_readings": list(DEFAULT_VLM_READINGS),
        "default_loss": "logit",
        "default_prompt": DEFAULT_VLM_PROMPT,
        "max_prompt_chars": ex.settings.vlm_max_prompt_chars,
        "answer_tokens": ex.settings.vlm_answer_tokens,
    }


def _given(value: str | None) -> str | None:
    """An empty form field is not given; anything else is kept as typed (leading spaces matter)."""
    return value if value and value.strip() else None


@router.post(
    "/explain",
    response_model=VLMExplainResponse,
    responses={**ERRORS, 409: {"model": ErrorResponse, "description": "no vision-language model is configured"}},
)
async def explain(
    ex: ExplorerDep,
    file: ImageFile = None,
    sample: SampleId = None,
    image_id: ImageId = None,
    prompt: str = Form("", description=f"the question about the image (the tab starts with {DEFAULT_VLM_PROMPT!r})"),
    target: str | None = Form(None, description="the word explained: text (' zebra': its first token) or topK (default: top1)"),
    contrast: str | None = Form(None, description="second word (' horse') for diff / normdiff; alone it implies diff"),
    loss: str | None = Form(None, description="logit, normdiff, diff, ratio (default: logit; diff with a contrast)"),
    methods: str | None = Form(None, description="comma-separated method names (default: complete,gae)"),
    readings: str | None = Form(None, description="comma-separated readings: language, vision (default: both)"),
) -> dict:
    """Every (method, reading) pair from one forward + backward pass: a map over the image's patches
    (raw, and as an overlay) and scores over the question's tokens, plus the model's greedy answer.

    Without a target the most likely next token is explained (its ``logit``); with a contrast
    ("why zebra rather than horse") the loss is ``diff``.
    """
    ex.check_vlm_prompt(prompt)
    names = ex.check_vlm_methods(methods)
    kinds = ex.check_vlm_readings(readings)
    target, contrast = _given(target), _given(contrast)
    loss_name = ex.check_vlm_loss(loss, target, contrast)
    digest, image = await ex.image(file, sample, image_id)
    vlm = await ex.vlm_explainer()
    key = key_of("explain-vlm", ex.vlm_name, digest, prompt, target, contrast, loss_name, names, kinds)
    result = await ex.cached(
        key, vlm_work.explain, vlm, image.original, prompt, methods=names, readings=kinds, target=target,
        contrast=contrast, loss=loss_name, answer_tokens=ex.settings.vlm_answer_tokens,
    )
    return {"result_id": key, "image_id": digest, **result}
