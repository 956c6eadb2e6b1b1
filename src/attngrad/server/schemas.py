"""The response shapes of every route, as pydantic models (``/openapi.json`` describes them).

The names of the JSON fields are the API: a change here is a change for every client.
Binary answers (sample images, PNG and ``.npy`` downloads, server-sent events) are
described by :data:`BINARY_PNG` and friends, passed as ``responses=`` to their routes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .settings import ServerSettings


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# -- errors -------------------------------------------------------------------------------------


class ErrorDetail(_Model):
    message: str = Field(description="what is wrong and what to do")
    field: str | None = Field(None, description="the input that was wrong (a form field)")
    valid: list[Any] | None = Field(None, description="the valid values of that input")
    retry_after: int | None = Field(None, description="503 busy: seconds to wait (also the Retry-After header)")


class ErrorResponse(_Model):
    detail: ErrorDetail


#: Error answers documented on every route that takes an image or does model work.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "not an image, truncated, or a decompression bomb"},
    404: {"model": ErrorResponse, "description": "unknown or expired id"},
    413: {"model": ErrorResponse, "description": "upload or request body over the size limit"},
    503: {"model": ErrorResponse, "description": "busy (with Retry-After), or the text or language model is not available"},
}


def binary(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route answering bytes of ``media_type``."""
    schema = {"type": "string", "format": "binary"} if not media_type.startswith("text/") else {"type": "string"}
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}


# -- model, classes, samples --------------------------------------------------------------------


class QueueStats(_Model):
    workers: int
    capacity: int
    in_flight: int
    completed: int
    rejected: int
    mean_task_s: float | None = Field(description="mean seconds per task (last 32); null before the first")


class CacheStats(_Model):
    items: int
    bytes: int
    max_items: int
    max_bytes: int
    hits: int
    misses: int


class Health(_Model):
    status: str = Field(description='"ok"')
    queue: QueueStats
    results: CacheStats
    images: CacheStats


class MethodInfo(_Model):
    name: str
    signed: bool = Field(description="true: the sign means support (red) or opposition (blue); false: magnitude only")
    red: str = Field(description='what red means: "support" (blue: oppose) or "magnitude"')
    legend: str = Field(description="one sentence for the colour bar")


class Info(_Model):
    model: str
    num_classes: int
    methods: list[str] = Field(description="every method name, in the library's order")
    method_details: list[MethodInfo] = Field(description="per method: what its colours mean")
    default_methods: list[str]
    losses: list[str]
    colormap: list[str] = Field(description="hex colours of the display colormap at 21 values from -1 to 1")
    limits: ServerSettings


class ClassEntry(_Model):
    index: int
    label: str


class ClassList(_Model):
    classes: list[ClassEntry]


class Sample(_Model):
    id: str
    title: str
    url: str


class SampleList(_Model):
    samples: list[Sample]


# -- predict and explain ------------------------------------------------------------------------


class Prediction(_Model):
    index: int
    label: str
    probability: float
    logit: float


class PredictResponse(_Model):
    image_id: str = Field(description="content hash: names the image in later calls")
    predictions: list[Prediction]


class ClassScore(_Model):
    index: int
    label: str
    logit: float


class MethodMap(_Model):
    name: str
    map: list[list[float]] = Field(description="the raw map, gh x gw, sign kept")
    peak: float = Field(description="max |S| of the map")
    signed: bool = Field(description="true: red supports, blue opposes; false: red is magnitude")
    legend: str
    overlay: str = Field(description="the overlay as a PNG data URL")
    png_url: str
    npy_url: str


class ExplainResponse(_Model):
    result_id: str
    image_id: str
    guide_id: str | None
    target: ClassScore
    contrast: ClassScore | None
    loss: str
    guided: bool
    grid: list[int] = Field(description="(gh, gw): the map's patch grid")
    predictions: list[Prediction]
    methods: list[MethodMap]


class Word(_Model):
    text: str
    score: float = Field(description="raw score, summed over the word's pieces")
    start: int
    end: int
    normalized: float = Field(description="S / max|S| over the text's words")


class TextMethod(_Model):
    name: str
    title: str
    signed: bool
    legend: str
    words: list[Word]
    against_words: list[Word] | None = Field(description="similarity: the other text explained the other way")


class TextTarget(_Model):
    label: str
    logit: float


class TextResponse(_Model):
    task: str = Field(description='"similarity" or "zero-shot"')
    text: str
    against: str | None
    loss: str
    labels: list[str]
    logits: dict[str, float]
    predicted: str
    target: TextTarget
    contrast: str | None
    methods: list[TextMethod]


# -- the model tabs (language model, vision-language model) --------------------------------------


class TabInfo(_Model):
    """What every model tab's info route gives (:func:`attngrad.server.render.tab_info` and the tab's own fields)."""

    available: bool = Field(description="false: the tab cannot explain (see reason)")
    reason: str | None = Field(description="why the tab's model is unavailable")
    model: str
    loaded: bool = Field(description="true once the model has been loaded (on first use)")
    methods: list[str] = Field(description="the tab's methods")
    method_details: list[MethodInfo] = Field(description="per method: what its colours mean")
    default_methods: list[str]
    losses: list[str]
    default_loss: str
    max_prompt_chars: int


# -- language model ---------------------------------------------------------------------------


class LMInfo(TabInfo):
    available: bool = Field(description="false: the tab is hidden (see reason)")
    reason: str | None = Field(description="why the language model is unavailable (switched off, not installed, failed to load)")
    context: int | None = Field(description="the model's context in tokens (null until loaded)")
    family: str | None = Field(description="the model's config.model_type (null while it is not known before loading)")
    default_methods: list[str] = Field(description="attnlrp and complete; complete alone for a family attnlrp does not "
                                                   "know (as attngrad explain-lm)")
    default_loss: str = Field(description='"diff", against the runner-up token unless a contrast is given (as attngrad explain-lm)')
    max_prompt_tokens: int
    max_new_tokens: int


class LMToken(_Model):
    text: str = Field(description="the token as text (special tokens the tokenizer adds included)")
    score: float = Field(description="raw score, sign kept")
    normalized: float | None = Field(description="S / max|S| over the shown tokens; null for a hidden first token")


class LMMethod(_Model):
    name: str
    title: str = Field(description="what was explained, as attngrad explain-lm prints it")
    signed: bool
    legend: str
    tokens: list[LMToken] = Field(description="every prompt token in order")


class NextToken(_Model):
    text: str
    id: int
    logit: float
    probability: float


class LMExplainResponse(_Model):
    task: str = Field(description='"lm-explain"')
    prompt: str
    loss: str
    target: NextToken = Field(description="the explained next token (default: the most likely)")
    contrast: NextToken | None = Field(description="the second token of diff / normdiff")
    next_tokens: list[NextToken] = Field(description="the most likely next tokens")
    notes: list[str] = Field(description="e.g. a target longer than one token: its first token is explained")
    hide_first: bool
    methods: list[LMMethod]


class LMStep(_Model):
    token: str = Field(description="the generated token")
    probability: float = Field(description="its probability (greedy: the most likely token)")
    tokens: list[LMToken] = Field(description="every earlier token (prompt and generated) with its score")


class LMGenerationResponse(_Model):
    task: str = Field(description='"lm-generation"')
    prompt: str
    method: str
    loss: str
    contrast: str | None = Field(description="the second token of diff / normdiff as given: a text, topK or runner-up")
    signed: bool
    legend: str
    prompt_tokens: list[str]
    generated: list[str]
    text: str = Field(description="the generated continuation")
    notes: list[str]
    hide_first: bool
    steps: list[LMStep] = Field(description="one map per generated token")


# -- vision-language model ----------------------------------------------------------------------


class VLMInfo(TabInfo):
    available: bool = Field(description="false: the tab shows why (see reason) and how to configure a model")
    reason: str | None = Field(description="why no vision-language model is available (none configured, failed to load)")
    readings: list[str] = Field(description='"language": over the LM\'s layers; "vision": on through the vision encoder')
    default_readings: list[str]
    default_loss: str = Field(description='"logit"; "diff" when a contrast is given (as attngrad explain-vlm)')
    default_prompt: str
    answer_tokens: int = Field(description="most tokens of the greedy answer")


class VLMResult(_Model):
    name: str = Field(description="the method")
    reading: str
    signed: bool = Field(description="true: red supports, blue opposes; false: red is magnitude")
    legend: str
    grid: list[int] = Field(description="(gh, gw): the map's patch grid")
    map: list[list[float]] = Field(description="the raw patch map, sign kept")
    overlay: str = Field(description="the overlay on the image the model saw, as a PNG data URL")
    tokens: list[LMToken] = Field(description="the prompt's text tokens in order (image tokens are the map)")


class VLMExplainResponse(_Model):
    task: str = Field(description='"vlm-explain"')
    result_id: str
    image_id: str
    prompt: str
    loss: str
    target: NextToken = Field(description="the explained next token (default: the most likely)")
    contrast: NextToken | None
    next_tokens: list[NextToken]
    answer: str = Field(description="the model's greedy answer")
    answer_tokens: list[str]
    results: list[VLMResult] = Field(description="one per (method, reading), methods first")


# -- jobs ---------------------------------------------------------------------------------------


class JobStarted(_Model):
    job_id: str
    status_url: str
    events_url: str


class RewriteNumbers(_Model):
    source: str
    from_: str = Field(alias="from")
    to: str
    success: bool
    steps: int
    linf_255: int
    l2: float
    psnr_db: float
    ssim: float
    before_top5: list[Prediction]
    after_top5: list[Prediction]


class RewriteMap(_Model):
    image: str = Field(description='"before" or "after"')
    class_: str = Field(alias="class")
    logit: float
    peak: float
    overlay: str


class RewriteResult(_Model):
    numbers: RewriteNumbers
    original: str
    rewritten: str
    difference: str
    maps: list[RewriteMap]


class TransferFrame(_Model):
    step: int
    target_logit: float
    opposing_logit: float
    target_probability: float
    opposing_probability: float
    opposing_share: float
    overlay: str
    peak: float


class TransferResult(_Model):
    target: str
    opposing: str
    optimizer: str
    lr: float
    reproduction_error: float
    opposing_overlay: str
    frames: list[TransferFrame]


class JobSnapshot(_Model):
    id: str
    kind: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    progress: float
    message: str
    events: list[dict[str, Any]] = Field(description="events from index `since`: progress, message, step numbers")
    n_events: int
    result: RewriteResult | TransferResult | dict[str, Any] | None = Field(
        description="a finished job's result (rewrite or transfer)"
    )
    error: str | None
