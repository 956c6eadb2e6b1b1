"""The limits of one server (:class:`ServerSettings`) and the methods explained by default."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_METHODS = ("gae", "complete")
DEFAULT_TEXT_METHODS = ("complete", "gae")
DEFAULT_LM_METHODS = ("attnlrp", "complete")  # attnlrp against the runner-up: the best on the evidence test (docs/lm.md)
DEFAULT_VLM_METHODS = ("complete", "gae")
DEFAULT_VLM_READINGS = ("language", "vision")
DEFAULT_VLM_PROMPT = "What is in this photo?"


@dataclass(frozen=True)
class ServerSettings:
    """Limits of one server.

    Attributes:
        max_upload_bytes: largest uploaded file (default 20 MB); larger -> 413.
        max_pixels: largest decoded image (width x height); larger -> 400 (decompression bomb).
        queue_capacity: model tasks running or waiting; more -> 503 with Retry-After.
        decode_capacity: uploads being decoded at once; more -> 503.
        cache_items, cache_bytes: bounds of the result cache (predictions, maps, overlays).
        image_cache_bytes: bound of the cache of decoded images (model input tensors).
        max_jobs: jobs remembered (finished ones are forgotten first).
        top_k: predictions returned with each image.
        lm_max_prompt_chars: longest language-model prompt in characters (422 above, before tokenising).
        lm_max_prompt_tokens: longest language-model prompt in tokens (422 above; the model's
            context is the bound when it is shorter).
        lm_max_new_tokens: most tokens one generation request may ask for (422 above).
        vlm_max_prompt_chars: longest vision-language question in characters (422 above).
        vlm_answer_tokens: most tokens of the vision-language model's greedy answer shown with each explanation.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    queue_capacity: int = 8
    decode_capacity: int = 8
    cache_items: int = 512
    cache_bytes: int = 64 * 1024 * 1024
    image_cache_bytes: int = 32 * 1024 * 1024
    max_jobs: int = 64
    top_k: int = 5
    lm_max_prompt_chars: int = 8_000
    lm_max_prompt_tokens: int = 512
    lm_max_new_tokens: int = 32
    vlm_max_prompt_chars: int = 2_000
    vlm_answer_tokens: int = 8

    @property
    def max_body_bytes(self) -> int:
        """Largest request body (an image and a guide image, plus the form): larger -> 413 unread."""
        return 2 * self.max_upload_bytes + (1 << 20)
