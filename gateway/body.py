"""The request body: bytes read within a size limit, parsed as JSON within limits of shape.

A body is refused with a 4xx naming the field (or ``body``) when it is

- larger than the limit (413, refused before it is all read);
- not UTF-8 JSON (422); NaN and Infinity are parsed, so that the field check names the field;
- nested deeper than ``MAX_DEPTH`` containers (422): a row's values are scalars, and a value
  nested a thousand levels deep only costs recursion wherever it goes next (its ``repr`` alone
  reached Python's recursion limit);
- holding a number beyond float64 (±1.8e308), such as a 400-digit integer literal (422, out of
  range): Python would hold it as an integer that no model input can take.

orjson parses first (the fast path). It refuses NaN and Infinity, lone UTF-16 surrogates,
numbers beyond float64 and nesting past 1,024 levels; then the standard library's parser
tries the same bytes with bounded number parsing, so the answer can name the field. The
nesting is walked only when the body holds more than ``MAX_DEPTH`` brackets at all, or came
through that second parser: a one-row body is never walked.

A client that goes away before sending the whole body raises ``ClientDisconnectedError``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect

from skewguard.errors import ClientDisconnectedError, InputError, PayloadTooLargeError

MAX_DEPTH = 32
"""Containers nested in a body: ``{"rows": [{...}]}`` is three; a row's values are scalars."""
_LONGEST_EXACT_INTEGER = 20
"""Digits (with a sign) of the longest 64-bit integer: longer ones become floats, as orjson reads them."""


@dataclass(frozen=True, slots=True)
class OutOfRange:
    """A number literal beyond float64, as the second parser found it (never leaves this module)."""

    text: str


async def read_body(chunks: AsyncIterable[bytes], declared: str | None, limit: int) -> bytes:
    """The body's bytes, refusing more than ``limit`` before reading them all.

    ``declared`` is the Content-Length header, if sent; ``chunks`` the request's stream.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"The body is {declared} bytes; at most {limit} are accepted.", field="body"
        )
    parts, size = [], 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"The body exceeds {limit} bytes.", field="body")
            parts.append(chunk)
    except ClientDisconnect as exc:
        raise ClientDisconnectedError(
            f"The client disconnected after {size} of {declared or 'an unknown number of'} bytes "
            "of the body.",
            field="body",
        ) from exc
    return b"".join(parts)


def parse_body(raw: bytes) -> Any:
    """The body as JSON, within ``MAX_DEPTH`` and float64; ``InputError`` naming the field otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = _parse_leniently(raw)
        check_shape(body)
        return body
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:  # C-speed: deep nesting needs this many
        check_shape(body)
    return body


def _parse_leniently(raw: bytes) -> Any:
    """The standard library's parser: NaN, Infinity and lone surrogates pass; numbers stay bounded."""
    try:
        return json.loads(raw, parse_int=_integer, parse_float=_float)
    except RecursionError as exc:
        raise InputError(
            f"The body nests more than {MAX_DEPTH} levels of arrays or objects; a row's values are "
            "numbers, strings or null.",
            field="body",
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"The body is not valid UTF-8 JSON: {exc}.", field="body") from exc


def _integer(text: str) -> int | float | OutOfRange:
    if len(text) <= _LONGEST_EXACT_INTEGER:
        return int(text)
    return _float(text)


def _float(text: str) -> float | OutOfRange:
    number = float(text)  # any length: the digit limit of int() does not apply
    return OutOfRange(text) if number in (float("inf"), float("-inf")) else number


def check_shape(body: Any) -> None:
    """Raise ``InputError`` naming the field for nesting past ``MAX_DEPTH`` or a number out of range.

    The field is the row's key the value sits under (``price`` in ``{"rows": [{"price": ...}]}``
    or ``{"price": ...}``), ``rows`` for rows that are not objects, else ``body``.
    """
    stack: list[tuple[Any, int, str | None, bool]] = []
    _push(stack, body, 1, None, True)
    while stack:
        value, depth, field, naming = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(field)
        if type(value) is dict:
            for key, child in value.items():
                named = key if naming else field
                _push(stack, child, depth + 1, named, naming and depth == 1 and key == "rows")
        else:
            for child in value:
                _push(stack, child, depth + 1, field, naming and field == "rows")


def _push(stack: list[tuple[Any, int, str | None, bool]], child: Any, *entry: Any) -> None:
    kind = type(child)
    if (kind is dict or kind is list) and child:
        stack.append((child, *entry))
    elif kind is OutOfRange:
        raise _out_of_range(entry[1], child.text)


def _too_deep(field: str | None) -> InputError:
    where = f"Field {field!r}" if field else "The body"
    return InputError(
        f"{where}: arrays or objects nested more than {MAX_DEPTH} levels deep; "
        "a row's values are numbers, strings or null.",
        field=field or "body",
    )


def _out_of_range(field: str | None, text: str) -> InputError:
    shown = text if len(text) <= 24 else f"{text[:12]}…({len(text)} characters)"
    where = f"Field {field!r}" if field else "The body"
    return InputError(
        f"{where}: the number {shown} is out of range; numbers must fit a float64 (within ±1.8e308).",
        field=field or "body",
    )
