"""ASGI middleware that rejects request bodies over the configured size with a 413."""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import BodyTooLargeError

__all__ = ["BodySizeLimitMiddleware"]

logger = logging.getLogger(__name__)

# Content types of file uploads, which get the larger upload limit.
_UPLOAD_TYPES = ("multipart/form-data", "application/octet-stream")

# Bytes of a rejected body read and discarded before the 413 is sent. Closing a socket
# with unread data makes the kernel send a reset, and a client still sending its body
# then gets "connection reset" instead of the 413. Bodies larger than this are cut off.
_DRAIN_MAX_BYTES = 64 * 1024 * 1024


class BodySizeLimitMiddleware:
    """Reject bodies larger than ``max_body_bytes``, or ``max_upload_bytes`` for file uploads.

    A declared Content-Length over the limit is rejected before any byte of the body is
    read. A body without one (chunked transfer) is counted as it streams in, and reading
    stops with a 413 as soon as the count passes the limit.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def _limit(self, headers: Headers) -> tuple[int, str]:
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type in _UPLOAD_TYPES:
            return self.max_upload_bytes, "RSIR_MAX_UPLOAD_BYTES"
        return self.max_body_bytes, "RSIR_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        limit, setting = self._limit(headers)
        declared = headers.get("content-length")
        declared_size = int(declared) if declared is not None and declared.isdigit() else None
        received = 0
        body_done = False
        response_started = False

        async def receive_counted() -> Message:
            # The check runs when the route reads the body, not before routing, so the
            # metrics label a 413 with the route it was sent to. FastAPI passes an
            # HTTPException raised while it reads the body on to its exception handlers,
            # which turn BodyTooLargeError into the 413 response.
            nonlocal received, body_done
            if declared_size is not None and declared_size > limit:
                raise BodyTooLargeError(declared_size, limit, setting)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    raise BodyTooLargeError(None, limit, setting)
            return message

        async def drain() -> None:
            nonlocal body_done
            if declared_size is not None and declared_size > _DRAIN_MAX_BYTES:
                return
            discarded = 0
            while not body_done and discarded <= _DRAIN_MAX_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client disconnected
                discarded += len(message.get("body", b""))
                body_done = not message.get("more_body", False)

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                if message["status"] == 413 and not body_done:
                    await drain()
            await send(message)

        try:
            await self.app(scope, receive_counted, send_tracked)
        except BodyTooLargeError as exc:
            # Reached only when no exception handler turned it into a response first.
            if response_started:
                raise
            await drain()
            await self._reject(scope, receive, send, exc)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, exc: BodyTooLargeError) -> None:
        logger.info("%s %s: rejected with 413: %s", scope["method"], scope["path"], exc.detail["message"])
        response = JSONResponse(status_code=413, content={"detail": exc.detail}, headers={"Connection": "close"})
        await response(scope, receive, send)
