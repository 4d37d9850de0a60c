"""One request through a served cascade: the champion, a canary's rows to the candidate, a shadow's copy.

    body ─► no variant, or a shadow ─► the champion answers every row ─► (shadow: a copy of the
         │                                                               request, at its fraction,
         │                                                               to the shadow queue)
         └► a canary ─► routing key per row (entity key │ routing header │ request id)
                     ─► its rows ─► the candidate ─┐  it fails: the champion answers them too,
                     ─► the rest ─► the champion  ─┤  the candidate's error logged beside them
                                                   └► the answers in the request's order, each
                                                      saying which variant served it

HTTP-free, like ``skewguard.gateway.predict``, which each path runs. The champion's answer
never waits on a shadow, and never fails because of a canary.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from skewguard.errors import ClientDisconnectedError, SkewguardError
from skewguard.gateway.canary import canary_rows, routing_keys
from skewguard.gateway.cascades import LoadedCascade, Served
from skewguard.gateway.predict import Outcome, PredictOptions, parse_rows, predict
from skewguard.gateway.records import candidate_failure, to_records, with_candidate
from skewguard.gateway.shadow import ShadowJob
from skewguard.predictionlog.records import PredictionRecord

CHAMPION, CANARY = "champion", "canary"


@dataclass(slots=True)
class Part:
    """The rows one variant answered: which of the request's rows, how, how fast."""

    cascade: LoadedCascade
    outcome: Outcome
    rows: list[int]
    variant: str
    latency_ms: float
    candidate: dict[str, Any] | None = None
    """The canary's failure on these rows, when the champion answered them instead."""


@dataclass(slots=True)
class Answered:
    """A request's answer: the parts that made it, in the request's row order once merged."""

    parts: list[Part]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Each row's answer, saying which variant served it, in the request's order."""
        if len(self.parts) == 1:  # one variant answered every row, in order
            (part,) = self.parts
            for row in part.outcome.rows:
                row["variant"] = part.variant
            return part.outcome.rows
        merged: dict[int, dict[str, Any]] = {}
        for part in self.parts:
            for index, row in zip(part.rows, part.outcome.rows, strict=True):
                row["variant"] = part.variant
                merged[index] = row
        return [merged[i] for i in sorted(merged)]

    def records(self, request_id: str) -> list[PredictionRecord]:
        """The prediction-log records of every answered row, sharing ``request_id``."""
        records = []
        for part in self.parts:
            own = to_records(
                part.cascade,
                part.outcome,
                request_id=request_id,
                rows=part.rows,
                variant=part.variant,
                latency_ms=part.latency_ms,
            )
            records += own if part.candidate is None else with_candidate(own, [part.candidate] * len(own))
        return records if len(self.parts) == 1 else sorted(records, key=lambda record: record.row)


async def answer(
    served: Served, body: Any, options: PredictOptions, *, request_id: str, routing_header: str | None = None
) -> Answered:
    """The answer to one request: by the champion, or partly by a canary."""
    variant = served.variant
    if variant is None or variant.cascade is None or variant.spec.mode != CANARY:
        return Answered([await _timed(served.champion, body, options, CHAMPION)])
    rows = parse_rows(body, options.max_rows)  # its shape only: each path checks the fields
    keys = routing_keys(rows, served.champion.manifest.entity_key, routing_header, request_id)
    chosen = canary_rows(keys, variant.spec.fraction, variant.spec.tag)
    if not chosen:
        return Answered([await _timed(served.champion, body, options, CHAMPION)])
    return await _with_canary(served.champion, variant.cascade, body, rows, chosen, options)


async def _with_canary(
    champion: LoadedCascade,
    candidate: LoadedCascade,
    body: Any,
    rows: list[dict[str, Any]],
    chosen: list[int],
    options: PredictOptions,
) -> Answered:
    """The canary's rows by the candidate and the others by the champion, concurrently."""
    picked = set(chosen)
    rest = [i for i in range(len(rows)) if i not in picked]
    runs: list[Any] = [_timed(candidate, _subset(rows, chosen), options, CANARY, chosen)]
    if rest:
        runs.append(_timed(champion, _subset(rows, rest), options, CHAMPION, rest))
    canary, *others = await asyncio.gather(*runs, return_exceptions=True)
    if isinstance(canary, BaseException):
        if not isinstance(canary, SkewguardError) or isinstance(canary, ClientDisconnectedError):
            raise canary
        whole = await _timed(champion, body, options, CHAMPION)  # the champion answers every row instead
        error = f"{canary.code}: {canary.message}"
        whole.candidate = candidate_failure(str(candidate.manifest.tag), CANARY, error=error)
        return Answered([whole])
    parts = [canary]
    for other in others:
        if isinstance(other, BaseException):
            if isinstance(other, SkewguardError):
                await predict(champion, body, options)  # the same refusal, naming the request's own row
            raise other
        parts.append(other)
    return Answered(parts)


def shadow_job(
    served: Served, body: Any, answered: Answered, records: list[PredictionRecord]
) -> ShadowJob | None:
    """The request's copy for the shadow, when one is attached and this request is in its fraction."""
    variant = served.variant
    if variant is None or variant.cascade is None or variant.spec.mode != "shadow":
        return None
    if variant.spec.fraction < 1.0 and random.random() >= variant.spec.fraction:
        return None
    (part,) = answered.parts
    fetched = part.outcome.fetched if variant.reads_same_features else None
    return ShadowJob(variant.cascade, body, records, fetched)


async def _timed(
    cascade: LoadedCascade, body: Any, options: PredictOptions, variant: str, rows: list[int] | None = None
) -> Part:
    started = time.perf_counter()
    outcome = await predict(cascade, body, options)
    latency_ms = (time.perf_counter() - started) * 1000
    return Part(
        cascade, outcome, rows if rows is not None else list(range(len(outcome.rows))), variant, latency_ms
    )


def _subset(rows: list[dict[str, Any]], indices: list[int]) -> dict[str, Any]:
    return {"rows": [rows[i] for i in indices]}
