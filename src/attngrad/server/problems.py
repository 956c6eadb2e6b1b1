"""Error responses: every error body is ``{"detail": {"message": ..., ...}}``.

``422`` comes from the library's own checks: an :class:`~attngrad.errors.AttngradError`
carries the wrong input (``field``) and its valid values (``choices``), sent as
``field`` and ``valid``; the server does not repeat the library's validation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ..errors import AttngradError
from .jobs import QueueFull


class Unavailable(Exception):
    """A model of the explorer cannot be loaded or is switched off: answered with 503 (no Retry-After)."""


class TextUnavailable(Unavailable):
    """The text explainer could not be loaded (``attngrad[text]`` missing)."""


class LMUnavailable(Unavailable):
    """The language model is switched off (``--no-lm``), not installed, or failed to load."""


class VLMUnavailable(Unavailable):
    """No vision-language model is configured (no ``--vlm-model`` and no shipped stand-in), or the
    configured one failed to load: answered with 409 (the server's setup, not a server fault)."""

    status = 409


def http_error(status: int, message: str, **extra: Any) -> HTTPException:
    """An HTTP error whose body is ``{"detail": {"message": message, **extra}}``."""
    return HTTPException(status_code=status, detail={"message": message, **extra})


def error_detail(err: AttngradError, field: str | None = None) -> dict[str, Any]:
    """The ``detail`` of a library error: its message, the input (``field`` here wins over the
    library's generic name, e.g. ``"contrast"`` for a class the library calls ``"target"``) and
    the valid values (``valid``)."""
    detail: dict[str, Any] = {"message": str(err)}
    name = field or err.field
    if name is not None:
        detail["field"] = name
    if err.choices is not None:
        detail["valid"] = err.choices
    return detail


def user_error(err: AttngradError, field: str | None = None, status: int = 422) -> HTTPException:
    """A library error as an HTTP error (422 by default) naming the input and its valid values."""
    return HTTPException(status_code=status, detail=error_detail(err, field))


def install_error_handlers(app: FastAPI) -> None:
    """503 + Retry-After when the queue is full; 503 when the text model or the language model is
    missing; 422 for
    any library error that reaches a route (from the model work itself)."""

    @app.exception_handler(QueueFull)
    async def _busy(_request: Request, err: QueueFull) -> JSONResponse:
        return JSONResponse(
            {"detail": {"message": str(err), "retry_after": err.retry_after}},
            status_code=503,
            headers={"Retry-After": str(err.retry_after)},
        )

    @app.exception_handler(Unavailable)
    async def _no_model(_request: Request, err: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": {"message": str(err)}}, status_code=getattr(err, "status", 503))

    @app.exception_handler(AttngradError)
    async def _user_error(_request: Request, err: AttngradError) -> JSONResponse:
        return JSONResponse({"detail": error_detail(err)}, status_code=422)
