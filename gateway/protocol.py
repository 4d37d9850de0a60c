"""The gateway server's HTTP/1.1 protocol: uvicorn's httptools protocol, with limits on the head.

uvicorn's httptools protocol (the fast one, and what uvicorn picks by default) reads a request's
line and headers without bound in size or time: a 1 MB header was read whole and answered
200, and connections that sent half a request line stayed open for good. This protocol adds
the two limits that a reverse proxy would otherwise set, in the server's configuration
(``GatewaySettings``, ``SKEWGUARD_MAX_HEADER_BYTES`` and ``SKEWGUARD_HEADER_TIMEOUT_SECONDS``):

- the request line and headers of one request may be ``max_header_bytes`` long: past that the
  answer is ``431 Request Header Fields Too Large`` and the connection is closed (what arrives
  is counted as it arrives, so at most one more read is held);
- they must arrive within ``header_timeout`` seconds of the connection opening, or of the
  request's first byte on a kept-alive connection: else ``408 Request Timeout`` and the
  connection is closed. (An idle kept-alive connection is closed by uvicorn's keep-alive
  timeout; a request being answered is not timed.) One timer per connection watches this: it
  fires at the latest when the head under way is due, and is set again for the next one,
  so a request costs no timer of its own.

``http_protocol(...)`` makes the class with its limits, for uvicorn's ``http`` option in one
process (``gateway.server``) and in the pre-forked workers (``gateway.workers``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEADER_BYTES = 16_384
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
LINGER_SECONDS = 2.0
"""After a 431 or 408: how long what the client still sends is read and dropped before closing."""
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class HeadTooLargeError(Exception):
    """Raised in a parser callback: the head passed its limit (httptools hands it back as context)."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit and a read timeout on each request's head."""

    max_header_bytes: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES
    header_timeout: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._received_in_head = 0  # bytes read while the head was incomplete (an upper bound)
        self._head_bytes = 0  # the head as parsed: line and headers
        self._head_started: float | None = None  # loop time the head under way began; None: none
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = self.loop.time()
        self._head_timer = self.loop.call_later(self.header_timeout, self._check_head)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, but a head past its limit is a 431, not the 400 of a parse error."""
        if self._refused:
            return  # answered and closing: nothing more is read
        if self._in_head:
            self._received_in_head += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeadTooLargeError):
                self._refuse(431)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and self._received_in_head > self.max_header_bytes:
            self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._count(len(url) + 12)  # the method, the version and the line's spaces and CRLF
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_started = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._received_in_head = True, 0

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            raise HeadTooLargeError

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check_head(self) -> None:
        """The connection's timer: a 408 if the head under way is past due, else set for when it is due."""
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        started = self._head_started
        waited = 0.0 if started is None else self.loop.time() - started
        if started is not None and waited >= self.header_timeout:
            self._refuse(408)
            return
        self._head_timer = self.loop.call_later(self.header_timeout - waited, self._check_head)

    def _refuse(self, status: int) -> None:
        """Answer ``status`` (unless a response is under way) and close the connection.

        A socket closed with unread bytes sends a reset, which can destroy the answer before the
        client reads it (a client still sending its 1 MB header would see a reset, not the 431).
        So the answer is followed by a FIN, what still arrives is read and dropped, and the
        connection is closed after ``LINGER_SECONDS`` at most.
        """
        self._refused = True
        self._disarm_head_timer()
        if self.cycle is None or self.cycle.response_complete:
            reason = _REASONS[status]
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(reason), reason)
            )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def http_protocol(max_header_bytes: int, header_timeout: float) -> type[LimitedHttpProtocol]:
    """The protocol class with these limits, for uvicorn's ``http`` option."""
    limits = {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout}
    return type("GatewayHttpProtocol", (LimitedHttpProtocol,), limits)
