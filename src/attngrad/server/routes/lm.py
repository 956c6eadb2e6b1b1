"""``/api/lm/*``: the language-model tab, why a causal LM predicts its next token (``attngrad[lm]``).

The same views as ``attngrad explain-lm``: a prompt's tokens scored for the next token
(``/api/lm/explain``, several methods from one pass), and a greedy generation with one map
per generated token (``/api/lm/generate``). The model (SmolLM2-135M-Instruct unless
``attngrad serve --lm MODEL``) loads on first use; ``/api/lm/info`` says whether it is
available and, when not, why (the explorer then hides the tab).
"""

from __future__ import annotations

from fastapi import APIRouter, Form

from ...lm import LM_METHODS
from .. import lm_work
from ..cache import key_of
from ..problems import http_error
from ..render import tab_info
from ..schemas import ERRORS, LMExplainResponse, LMGenerationResponse, LMInfo
from ..service import Explorer, ExplorerDep

router = APIRouter(prefix="/api/lm", tags=["language model"])

_PROMPT = Form("", description="the prompt whose next token is explained")
_CONTRAST = Form(None, description="second token: text (' Rome', with its leading space), topK, or runner-up")
_LOSS = Form(None, description="logit, normdiff, diff, ratio (default: logit; diff with a contrast)")
_HIDE_FIRST = Form(False, description="leave the first token (the attention sink) out of the colours, not the maths")


@router.get("/info", response_model=LMInfo)
async def info(ex: ExplorerDep) -> dict:
    """Whether the language model is available (else why), its methods, losses and limits."""
    lm = ex.lm_loaded
    return {
        **tab_info(missing=ex.lm_missing, model=ex.lm_name, loaded=lm is not None, methods=list(LM_METHODS),
                   signed=lm_work.signed, legend=lm_work.legend),
        "context": None if lm is None else lm.max_length,
        "family": ex.lm_family,
        "default_methods": list(ex.lm_default_methods()),
        "default_loss": "diff",
        "max_prompt_chars": ex.settings.lm_max_prompt_chars,
        "max_prompt_tokens": ex.settings.lm_max_prompt_tokens,
        "max_new_tokens": ex.settings.lm_max_new_tokens,
    }


def _given(value: str | None) -> str | None:
    """An empty form field is not given; anything else is kept as typed (leading spaces matter)."""
    return value if value else None


@router.post("/explain", response_model=LMExplainResponse, responses={503: ERRORS[503]})
async def explain(
    ex: ExplorerDep,
    prompt: str = _PROMPT,
    target: str | None = Form(None, description="the token explained: text (' Paris') or topK (default: top1)"),
    contrast: str | None = _CONTRAST,
    loss: str | None = _LOSS,
    methods: str | None = Form(None, description="comma-separated method names (default: attnlrp,complete; "
                                                  "complete alone for a family attnlrp does not know, see /api/lm/info)"),
    hide_first: bool = _HIDE_FIRST,
) -> dict:
    """Scores of every prompt token for the next token, every method from one forward + backward pass.

    Without a target the most likely next token is explained (its ``logit``, eq. 7); with a
    contrast ("why Paris rather than Rome") the loss is ``diff`` (eq. 8 with ``normdiff``); a
    two-token loss without a contrast compares with the runner-up token. Each token has its raw
    ``score`` and ``normalized`` = ``S / max|S|`` over the prompt's tokens.
    """
    ex.check_lm_prompt(prompt)
    names = ex.check_lm_methods(methods) if _given(methods) else None
    loss_name, contrast = ex.check_lm_loss(loss, _given(contrast))
    target = _given(target)
    lm = await ex.lm_explainer()
    names = names or list(ex.lm_default_methods())  # the loaded model's family decides (as attngrad explain-lm)
    key = key_of("explain-lm", ex.lm_name, prompt, target, contrast, loss_name, names, hide_first)
    return await ex.cached(
        key, lm_work.explain, lm, prompt, methods=names, target=target, contrast=contrast, loss=loss_name,
        hide_first=hide_first, max_tokens=ex.settings.lm_max_prompt_tokens,
    )


@router.post("/generate", response_model=LMGenerationResponse, responses={503: ERRORS[503]})
async def generate(
    ex: ExplorerDep,
    prompt: str = _PROMPT,
    max_new_tokens: int | None = Form(None, description="tokens to generate greedily (1 .. the server's limit; default 10 or the limit)"),
    method: str | None = Form(None, description="one method name (default: complete)"),
    contrast: str | None = _CONTRAST,
    loss: str | None = _LOSS,
    hide_first: bool = _HIDE_FIRST,
) -> dict:
    """Generate greedily, then explain every generated token over every earlier token (one map each)."""
    ex.check_lm_prompt(prompt)
    name = _one_method(ex, method)
    n = ex.check_new_tokens(min(10, ex.settings.lm_max_new_tokens) if max_new_tokens is None else max_new_tokens)
    loss_name, contrast = ex.check_lm_loss(loss, _given(contrast))
    lm = await ex.lm_explainer()
    key = key_of("explain-lm-generation", ex.lm_name, prompt, n, name, contrast, loss_name, hide_first)
    return await ex.cached(
        key, lm_work.explain_generation, lm, prompt, method=name, max_new_tokens=n, contrast=contrast,
        loss=loss_name, hide_first=hide_first, max_tokens=ex.settings.lm_max_prompt_tokens,
    )


def _one_method(ex: Explorer, method: str | None) -> str:
    names = ex.check_lm_methods(method, default=("complete",), field="method")
    if len(names) != 1:
        raise http_error(422, "a generation is explained with one method; choose one", field="method",
                         valid=list(LM_METHODS))
    return names[0]
