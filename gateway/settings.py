"""The gateway's settings: the kernel's plus serving knobs, from ``SKEWGUARD_*`` once at start."""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from skewguard.bentos.images import MAX_REQUEST_PIXELS
from skewguard.errors import ConfigError
from skewguard.settings import Settings

_SENDABLE = re.compile(r"[\x21-\x7e]+")


class GatewaySettings(Settings):
    """What ``skewguard serve`` reads from the environment."""

    host: str = Field(default="127.0.0.1", description="Address the gateway binds; 0.0.0.0 for every one.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the gateway listens on.")
    cascades: str = Field(
        default="",
        description="Comma-separated cascade names to serve; empty: every cascade with a champion.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token predict, list and admin then need; without it admin is closed (403).",
    )
    max_body_bytes: int = Field(default=2_000_000, gt=0, description="Larger request bodies: 413.")
    max_request_pixels: int = Field(
        default=MAX_REQUEST_PIXELS, gt=0, description="Decoded image pixels one request may add up to (413)."
    )
    max_header_bytes: int = Field(
        default=16_384, ge=1_024, description="Request line and headers of one request, in bytes (431)."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A request's line and headers must arrive within this, else closed."
    )
    max_rows: int = Field(default=1_000, gt=0, description="Rows in one request at most; more: 422.")
    request_budget_ms: float = Field(
        default=1_000.0, gt=0, description="Time a request may take; a model slower than that: 504."
    )
    on_feature_store_error: Literal["degrade", "reject"] = Field(
        default="degrade",
        description="Online store down: degrade (training defaults and a feature_store_unavailable flag) "
        "or reject (503).",
    )
    guard_reject: str = Field(default="", description="Comma-separated skew flag kinds answered with 422.")
    guard_range_quantiles: str = Field(
        default="0.0,1.0",
        description="Two training quantiles, low,high, bounding numbers; outside them: an out_of_range flag.",
    )
    remote_models: str = Field(
        default="{}",
        description='JSON {"model-name": "http://host:port"}: models run by their own `bentoml serve` '
        "services; the others run in the gateway.",
    )
    log_url: str | None = Field(
        default=None,
        description="The prediction log: sqlite:///path or postgresql://...; default: "
        "predictions.db in the home.",
    )
    log_queue: int = Field(
        default=10_000,
        gt=0,
        description="Prediction-log records held while the log's database is slow or down; beyond: dropped "
        "and counted.",
    )
    log_retention_days: float = Field(
        default=0, ge=0, description="Delete logged rows older than this many days; 0 keeps them all."
    )
    shadow_queue: int = Field(
        default=256, gt=0, description="Shadow copies waiting to run at most; more are dropped and counted."
    )
    shadow_concurrency: int = Field(
        default=2, gt=0, le=64, description="Shadow copies run at once per gateway process."
    )
    shadow_max_inflight: int = Field(
        default=8,
        ge=0,
        description="A shadow copy runs only while at most this many champion requests are in flight in "
        "the process (0: any number).",
    )
    shadow_max_load: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="A shadow copy runs only while the event loop's thread is busy less than this share "
        "of the time (1: always).",
    )
    watch_seconds: float = Field(default=2.0, ge=0, description="Champion alias poll interval; 0 = off.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Gateway processes on the one port (gunicorn's pre-fork master over uvicorn workers).",
    )

    @field_validator("api_token", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value  # compose passes ${SKEWGUARD_API_TOKEN:-}: empty is unset

    @field_validator("api_token")
    @classmethod
    def _sendable(cls, value: SecretStr | None) -> SecretStr | None:
        """A token a client can send as it is: visible ASCII, no spaces (HTTP trims a header's ends).

        ``ConfigError``, not ``ValueError``: pydantic's error would quote the token.
        """
        if value is not None and not _SENDABLE.fullmatch(value.get_secret_value()):
            raise ConfigError(
                "Setting SKEWGUARD_API_TOKEN: expected visible ASCII characters without spaces "
                "(such as the output of `openssl rand -hex 32`); the value set has others.",
                field="SKEWGUARD_API_TOKEN",
            )
        return value

    @field_validator("remote_models")
    @classmethod
    def _json_object(cls, value: str) -> str:
        parsed = json.loads(value)
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise ValueError("expected a JSON object of model name → URL")
        return value

    @property
    def log_retention_seconds(self) -> float | None:
        """``log_retention_days`` in seconds; None when the log keeps everything."""
        return self.log_retention_days * 86_400 or None

    @property
    def display_host(self) -> str:
        """The host to print in a URL a user can open: a wildcard bind is reachable on loopback."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def cascade_names(self) -> list[str]:
        return [name.strip() for name in self.cascades.split(",") if name.strip()]

    @property
    def remote_urls(self) -> dict[str, str]:
        urls: dict[str, str] = json.loads(self.remote_models)
        return urls

    @property
    def prediction_log_url(self) -> str:
        return self.log_url or f"sqlite:///{(self.home / 'predictions.db').resolve()}"
