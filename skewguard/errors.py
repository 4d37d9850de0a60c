"""The error hierarchy shared by every skewguard package.

Each error carries a stable ``code`` string and the HTTP ``status_code`` the gateway and
the Bento services answer with. Only those HTTP layers turn errors into JSON.

    SkewguardError                  skewguard_error             500
    ├── InputError                  invalid_input               422   (names the field)
    │   ├── ImageError              invalid_image               422
    │   └── PayloadTooLargeError    payload_too_large           413
    ├── ConfigError                 invalid_config              500
    ├── ConversionError             conversion_failed           500
    │   └── UnsupportedStepError    step_unsupported            500   (names the step, why, the remedy)
    ├── ParityError                 parity_failed               500   (carries the report)
    ├── ModelOutputError            model_output_invalid        500   (a graph answered NaN)
    ├── ArtifactError               artifact_invalid            500
    │   └── ModelNotFoundError      model_not_found             404
    ├── FeatureStoreUnavailable     feature_store_unavailable   503   (down, failing or too slow)
    ├── SharedStateUnavailable      shared_state_unavailable    503   (alias store or model export)
    ├── PredictionLogError          prediction_log_failed       503   (``transient`` or not)
    ├── DriftReportError            drift_report_failed         500
    ├── UnauthorizedError           unauthorized                401
    ├── AdminDisabledError          admin_disabled              403   (no SKEWGUARD_API_TOKEN set)
    ├── BudgetExceededError         request_budget_exceeded     503   (the gateway's own work ran out)
    ├── ClientDisconnectedError     client_disconnected         499   (never sent: the client left)
    └── UpstreamError               upstream_error              502
        ├── UpstreamUnavailableError  upstream_unavailable      503   (a remote model is down)
        └── UpstreamTimeoutError      upstream_timeout          504   (the request budget ran out)
"""

from __future__ import annotations

from typing import Any, ClassVar


class SkewguardError(Exception):
    """Base of every error skewguard raises on purpose."""

    code: ClassVar[str] = "skewguard_error"
    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The JSON body an HTTP layer answers with."""
        body: dict[str, Any] = {"code": self.code, "message": as_utf8(self.message)}
        if self.field is not None:
            body["field"] = as_utf8(self.field)
        return body


def as_utf8(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate (JSON's ``\\ud800`` escape parses to one) as that escape.

    A field named after a client's key or value may hold one, and no JSON encoder writes it.
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class InputError(SkewguardError):
    """A request or a data frame does not match the model's input spec."""

    code = "invalid_input"
    status_code = 422


class ImageError(InputError):
    """Bytes that should be an image could not be decoded safely."""

    code = "invalid_image"


class PayloadTooLargeError(InputError):
    """A body, string or image is larger than the configured limit."""

    code = "payload_too_large"
    status_code = 413


class ConfigError(SkewguardError):
    """A setting or an argument is invalid."""

    code = "invalid_config"


class ConversionError(SkewguardError):
    """A fitted pipeline could not be turned into an ONNX graph."""

    code = "conversion_failed"


class UnsupportedStepError(ConversionError):
    """A pipeline step has no exact ONNX conversion; the message names the step, why, and a remedy."""

    code = "step_unsupported"

    def __init__(self, step: str, reason: str, remedy: str) -> None:
        super().__init__(f"Step {step!r} does not convert exactly: {reason} Remedy: {remedy}")
        self.step = step
        self.reason = reason
        self.remedy = remedy


class ModelOutputError(SkewguardError):
    """A served model answered something that is not a prediction (e.g. NaN probabilities)."""

    code = "model_output_invalid"


class ParityError(SkewguardError):
    """The ONNX graph does not reproduce the scikit-learn pipeline within tolerance."""

    code = "parity_failed"

    def __init__(self, message: str, *, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class ArtifactError(SkewguardError):
    """A stored model is missing a file, or a file does not match its recorded hash."""

    code = "artifact_invalid"


class ModelNotFoundError(ArtifactError):
    """No model with that tag is in the model store."""

    code = "model_not_found"
    status_code = 404


class FeatureStoreUnavailable(SkewguardError):  # noqa: N818  # the name the gateway and its docs use
    """The online feature store is down, failing or did not answer in time; retrying may help."""

    code = "feature_store_unavailable"
    status_code = 503


class SharedStateUnavailable(SkewguardError):  # noqa: N818  # like FeatureStoreUnavailable
    """The champion alias store (Redis, PostgreSQL) or the model export cannot be reached now."""

    code = "shared_state_unavailable"
    status_code = 503


class UnauthorizedError(SkewguardError):
    """The request lacks the bearer token this gateway requires."""

    code = "unauthorized"
    status_code = 401


class AdminDisabledError(SkewguardError):
    """An admin endpoint was called on a gateway without ``SKEWGUARD_API_TOKEN``: admin is closed."""

    code = "admin_disabled"
    status_code = 403


class BudgetExceededError(SkewguardError):
    """The request's time budget ran out in the gateway's own work (decoding), before any model ran."""

    code = "request_budget_exceeded"
    status_code = 503


class ClientDisconnectedError(SkewguardError):
    """The client closed the connection before sending the whole body; nobody is left to answer.

    499 is the status proxies log for this case; it is counted, never sent.
    """

    code = "client_disconnected"
    status_code = 499


class UpstreamError(SkewguardError):
    """A remote model service failed."""

    code = "upstream_error"
    status_code = 502


class UpstreamUnavailableError(UpstreamError):
    """A remote model service is unreachable or answered with an error."""

    code = "upstream_unavailable"
    status_code = 503


class UpstreamTimeoutError(UpstreamError):
    """A remote model did not answer within what was left of the request budget."""

    code = "upstream_timeout"
    status_code = 504


class PredictionLogError(SkewguardError):
    """The prediction log's database refused a read or a write."""

    code = "prediction_log_failed"
    status_code = 503

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class DriftReportError(SkewguardError):
    """Evidently could not compute a report even after the columns were screened."""

    code = "drift_report_failed"
