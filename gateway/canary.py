"""Canary assignment: which rows a canary answers, the same on every worker and every replica.

Each row has a routing key: its entity key's value when the cascade has one (so an entity
sees one variant for as long as the canary runs), else the client's routing header
(``X-Skewguard-Routing-Key``: a session or user id the client chooses), else the request
id. The key is hashed with BLAKE2b together with the candidate's tag, and the canary
answers the row when the 64-bit hash, as a share of 2**64, is below the canary's share.
Salting with the tag gives each candidate a cohort of its own: one canary's entities are
not the next one's by construction. No state, no randomness: pure functions of their input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

ROUTING_HEADER = "x-skewguard-routing-key"
"""The request header naming the routing key of a cascade without an entity key."""
MAX_ROUTING_KEY = 256
_SCALE = float(2**64)


def share_of(key: str, salt: str) -> float:
    """Where ``key`` falls in [0, 1): uniform over keys, fixed for one ``salt``."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt.encode()[:64])
    return int.from_bytes(digest.digest(), "big") / _SCALE


def is_canary(key: str, share: float, salt: str) -> bool:
    """Whether the canary of ``share`` (salted by the candidate's tag) answers routing key ``key``."""
    return share_of(key, salt) < share


def routing_keys(
    rows: Sequence[Mapping[str, Any]], entity_key: str | None, header: str | None, request_id: str
) -> list[str]:
    """Each row's routing key: its entity key's value, else the client's header, else the request id."""
    fallback = header[:MAX_ROUTING_KEY] if header else request_id
    if entity_key is None:
        return [fallback] * len(rows)
    return [_entity(row.get(entity_key), fallback) for row in rows]


def _entity(value: Any, fallback: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return fallback  # a row the cascade will refuse anyway (422): any key will do
    return str(value)


def canary_rows(keys: Sequence[str], share: float, salt: str) -> list[int]:
    """The indices of the rows the canary answers."""
    return [i for i, key in enumerate(keys) if is_canary(key, share, salt)]
