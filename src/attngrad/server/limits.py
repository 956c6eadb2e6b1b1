"""ASGI middleware that refuses request bodies over a size limit with ``413`` before they are parsed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before they are parsed.

    A declared ``Content-Length`` over the limit is refused at once; a streamed body is cut
    off (the app sees a disconnect) as soon as it passes the limit, and whatever the app
    answers is replaced by the 413.
    """

    def __init__(self, app: Callable, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen = 0
        too_large = started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        mb = self.limit / 2**20
        body = json.dumps({"detail": {"message": f"request body over {mb:.1f} MB; upload a smaller image"}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
