"""The request-time skew guard: each row's values against the model's training profile.

Built once per cascade from an input spec and a training profile (``skewguard.bentos.profile``),
it precomputes bounds, category and vocabulary sets, so that ``check`` costs a few
microseconds per row and never touches I/O. It flags, per row:

    unseen_category          a categorical value absent from training
    out_of_range             a number outside the training [q_lo, q_hi] quantiles; a timestamp
                             before the training min or more than a horizon past its max
    missing_value            null where training never had a null
    missing_online_feature   the online store had no value; the spec's default was used
    unknown_entity           the online store has no row at all for the entity key (set by the
                             request path, ``skewguard.gateway.predict``, beside that feature's flags)
    out_of_vocabulary        text whose tokens are mostly unknown to training
    image_stats              brightness, contrast or a channel mean far (in z) from training

``rejected`` says which flag, if any, the configuration turns into a 422.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from skewguard.bentos.images import IMAGE_VALUES
from skewguard.bentos.inputs import Batch
from skewguard.bentos.profile import TOKEN_PATTERN
from skewguard.bentos.spec import FieldSpec, InputSpec
from skewguard.errors import ConfigError

FLAG_KINDS: tuple[str, ...] = ("unseen_category", "out_of_range", "missing_value", "missing_online_feature")
FLAG_KINDS += ("out_of_vocabulary", "image_stats", "unknown_entity")
SETTING_PREFIX = "SKEWGUARD_GUARD_"
_MIN_IMAGE_SPREAD = 0.5  # a grey level: below that, training "spread" is quantisation noise
_IMAGE_STATS = ("brightness", "red mean", "green mean", "blue mean", "contrast")


@dataclass(frozen=True, slots=True)
class SkewFlag:
    """One departure of one row from training: what kind, which field, a sentence for humans."""

    kind: str
    field: str
    detail: str


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """How strict the guard is, and which flag kinds reject the request (422) instead of flagging."""

    range_quantiles: tuple[float, float] = (0.0, 1.0)  # training quantiles bounding numbers; 0/1 = min/max
    oov_share: float = 0.5  # text is out of vocabulary when more than this share of tokens is unknown
    image_z: float = 4.0  # image statistics this many training standard deviations off are flagged
    horizon_days: float = 366.0  # serving follows training: timestamps may pass the training max this much
    reject: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        q = self.range_quantiles
        problems = {
            "range_quantiles": (len(q) == 2 and 0.0 <= q[0] < q[-1] <= 1.0, "0 <= low < high <= 1"),
            "oov_share": (0.0 <= self.oov_share < 1.0, "a share 0 <= share < 1"),
            "image_z": (self.image_z > 0.0, "a positive number"),
            "horizon_days": (self.horizon_days >= 0.0, "a number of days >= 0"),
            "reject": (self.reject <= set(FLAG_KINDS), "a subset of " + ", ".join(FLAG_KINDS)),
        }
        for name, (ok, expected) in problems.items():
            if not ok:
                value = sorted(self.reject) if name == "reject" else getattr(self, name)
                raise ConfigError(f"{name} is {value}; expected {expected}.", field=name)

    @classmethod
    def from_strings(cls, **settings: str | None) -> GuardConfig:
        """From env-style strings keyed by field, e.g. ``reject="unseen_category,out_of_range"``.

        None or blank keeps the default; errors name the ``SKEWGUARD_GUARD_*`` setting.
        """
        values: dict[str, Any] = {}
        for name, text in settings.items():
            setting = SETTING_PREFIX + name.upper()
            if name not in _PARSERS:
                raise ConfigError(f"Unknown setting {setting}; known: {list(_PARSERS)}.", field=setting)
            parse, wanted = _PARSERS[name]
            try:
                if text is not None and text.strip():
                    values[name] = parse(text)
            except ValueError as exc:
                raise ConfigError(
                    f"Setting {setting}: expected {wanted}, got {text!r}.", field=setting
                ) from exc
        try:
            return cls(**values)
        except ConfigError as exc:
            setting = SETTING_PREFIX + str(exc.field).upper()
            raise ConfigError(f"Setting {setting}: {exc.message}", field=setting) from exc


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "range_quantiles": (lambda text: tuple(map(float, _split(text))), "two quantiles like 0.01,0.99"),
    "oov_share": (float, "a share such as 0.5"),
    "image_z": (float, "a number of standard deviations such as 4"),
    "horizon_days": (float, "a number of days such as 366"),
    "reject": (lambda text: frozenset(_split(text)), "comma-separated flag kinds"),
}
Rows = list[list[SkewFlag]]


class SkewGuard:
    """Flags per row of a ``Batch``; built once per cascade, shared by every request."""

    __slots__ = ("_checks", "_online", "config")

    def __init__(
        self, spec: InputSpec, profile: Mapping[str, Any], config: GuardConfig = GuardConfig()
    ) -> None:
        self.config = config
        fields = profile.get("fields") if isinstance(profile, Mapping) else None
        if not isinstance(fields, Mapping):
            raise ConfigError("The training profile has no 'fields' mapping; re-package the model.")
        checks = (_build_check(field, fields.get(field.name), config) for field in spec)
        self._checks = [check for check in checks if check is not None]
        # Flags are immutable: one instance per online feature serves every request.
        said = "was not in the online store for this entity; the default {} (training median) was used."
        self._online = {
            f.name: SkewFlag("missing_online_feature", f.name, f"{f.name} {said.format(_number(f.default))}")
            for f in spec.online_features
        }

    def check(self, batch: Batch, *, missing_online: Sequence[Sequence[str]] = ()) -> Rows:
        """The flags of each row of ``batch``; ``missing_online[i]`` names row i's defaulted features."""
        rows: Rows = [[] for _ in range(len(batch))]
        if missing_online and len(missing_online) != len(rows):
            raise ValueError(f"missing_online has {len(missing_online)} entries for {len(rows)} rows.")
        for i, names in enumerate(missing_online):
            rows[i].extend(self._online.get(name) or _online_flag(name) for name in names)
        for check in self._checks:
            check.apply(batch.columns[check.name], rows)
        return rows

    def rejected(self, flags: Sequence[SkewFlag]) -> SkewFlag | None:
        """The first flag whose kind the configuration rejects, if any."""
        reject = self.config.reject
        return next((flag for flag in flags if flag.kind in reject), None) if reject else None


def _online_flag(name: str) -> SkewFlag:  # a feature of a specialist the guard's spec lacks
    return SkewFlag("missing_online_feature", name, f"{name} was not in the online store for this entity.")


def _build_check(field: FieldSpec, profile: Any, config: GuardConfig) -> _Check | None:
    if profile is None and field.kind != "categorical":
        return None  # only categories can come from the spec alone
    try:
        if profile is not None and profile["kind"] != field.kind:
            raise ValueError(f"a {profile['kind']} profile for a {field.kind} field")
        return _CHECKS[field.kind].build(field, profile or {}, config)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(
            f"The training profile of field {field.name!r} is malformed ({exc!r}); re-package the model.",
            field=field.name,
        ) from exc


def _number(value: float) -> str:
    return f"{value:,.6g}"


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:37] + "...")


def _missing(name: str) -> SkewFlag:
    return SkewFlag("missing_value", name, f"{name} is missing; training never had it missing.")


def _moment(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):  # past year 9999: milliseconds sent as seconds?
        return f"{seconds:.6g} s"


def _quantile(quantiles: Mapping[str, Any], q: float) -> float:
    """``q`` interpolated linearly between the stored quantiles (keys "0.0" ... "1.0")."""
    points = sorted((float(key), float(value)) for key, value in quantiles.items())
    return float(np.interp(q, [p for p, _ in points], [v for _, v in points]))


@dataclass(frozen=True, slots=True)
class _RangeCheck:
    name: str
    low: float
    high: float
    labels: tuple[str, str]
    flag_missing: bool
    is_time: bool

    @classmethod
    def build(cls, field: FieldSpec, profile: Mapping[str, Any], config: GuardConfig) -> Self:
        flag_missing, is_time = float(profile["missing_share"]) == 0.0, field.kind == "datetime"
        quantiles = profile.get("quantiles")
        if not quantiles:  # training had no value at all
            return cls(field.name, -np.inf, np.inf, ("min", "max"), flag_missing, is_time)
        if is_time:  # requests come after training, not inside its window
            high = _quantile(quantiles, 1.0) + config.horizon_days * 86_400
            labels = ("min", f"horizon (max + {config.horizon_days:g} days)")
            return cls(field.name, _quantile(quantiles, 0.0), high, labels, flag_missing, is_time)
        q_low, q_high = config.range_quantiles
        bounds = _quantile(quantiles, q_low), _quantile(quantiles, q_high)
        names = {0.0: "min", 1.0: "max"}
        labels = (names.get(q_low, f"{q_low:g} quantile"), names.get(q_high, f"{q_high:g} quantile"))
        return cls(field.name, *bounds, labels, flag_missing, is_time)

    def apply(self, column: NDArray[Any], rows: Rows) -> None:
        low, high = self.low, self.high
        for i, x in enumerate(column[:, 0].tolist()):
            if low <= x <= high:
                continue
            if x != x:  # NaN
                if self.flag_missing:
                    rows[i].append(_missing(self.name))
                continue
            side, label, bound = (
                ("below", self.labels[0], low) if x < low else ("above", self.labels[1], high)
            )
            detail = f"{self.name}={self._show(x)} is {side} the training {label} {self._show(bound)}."
            rows[i].append(SkewFlag("out_of_range", self.name, detail))

    def _show(self, x: float) -> str:
        return _moment(x) if self.is_time else _number(x)


@dataclass(frozen=True, slots=True)
class _CategoryCheck:
    name: str
    known: frozenset[str]

    @classmethod
    def build(cls, field: FieldSpec, profile: Mapping[str, Any], config: GuardConfig) -> Self | None:
        known = frozenset(field.categories) | frozenset(str(k) for k in profile.get("frequencies", {}))
        return cls(field.name, known) if known else None

    def apply(self, column: NDArray[Any], rows: Rows) -> None:
        known = self.known
        for i, value in enumerate(column[:, 0].tolist()):
            if value in known:
                continue
            if value == "":
                rows[i].append(_missing(self.name))
                continue
            detail = f"{self.name}={_short(value)} was never seen in training ({len(known)} known values)."
            rows[i].append(SkewFlag("unseen_category", self.name, detail))


@dataclass(frozen=True, slots=True)
class _TextCheck:
    name: str
    vocabulary: frozenset[str]
    oov_share: float
    flag_missing: bool

    @classmethod
    def build(cls, field: FieldSpec, profile: Mapping[str, Any], config: GuardConfig) -> Self | None:
        vocabulary = frozenset(str(token) for token in profile["vocabulary"])
        flag_missing = float(profile["empty_share"]) == 0.0
        return cls(field.name, vocabulary, config.oov_share, flag_missing) if vocabulary else None

    def apply(self, column: NDArray[Any], rows: Rows) -> None:
        vocabulary, findall, limit = self.vocabulary, TOKEN_PATTERN.findall, self.oov_share
        for i, text in enumerate(column[:, 0].tolist()):
            tokens = findall(text.lower())
            unknown = [t for t in tokens if t not in vocabulary]
            if tokens and len(unknown) <= limit * len(tokens):
                continue
            if tokens:
                share = f"{len(unknown)} of {len(tokens)} tokens ({len(unknown) / len(tokens):.0%})"
                detail = f"{self.name}: {share} are unknown to training, e.g. {_short(unknown[0])}."
            elif text.strip():  # only non-ASCII or punctuation: the graph's tokenizer sees nothing
                detail = f"{self.name}={_short(text)} has no token the model can read (ASCII words)."
            else:
                if self.flag_missing:
                    rows[i].append(_missing(self.name))
                continue
            rows[i].append(SkewFlag("out_of_vocabulary", self.name, detail))


@dataclass(frozen=True, slots=True)
class _ImageCheck:
    name: str
    weights: NDArray[np.float32]  # pixels @ weights = brightness and the red, green, blue means
    center: tuple[float, ...]
    scale: tuple[float, ...]
    bounds: tuple[tuple[float, float], ...]  # center ± image_z × scale

    @classmethod
    def build(cls, field: FieldSpec, profile: Mapping[str, Any], config: GuardConfig) -> Self | None:
        brightness, contrast = profile["brightness"], profile["contrast"]
        if "mean" not in brightness:  # no training image
            return None
        shape = len(_IMAGE_STATS)  # reshape: ValueError unless three channels
        center = np.asarray([brightness["mean"], *profile["channel_means"], contrast["mean"]]).reshape(shape)
        spread = np.asarray([brightness["std"], *profile["channel_stds"], contrast["std"]]).reshape(shape)
        scale = np.maximum(spread.astype(np.float64), _MIN_IMAGE_SPREAD)
        weights = np.zeros((IMAGE_VALUES, 4), dtype=np.float32)
        weights[:, 0] = 1 / IMAGE_VALUES
        for channel in range(3):  # pixels are interleaved RGB
            weights[channel::3, channel + 1] = 3 / IMAGE_VALUES
        low, high = (center - config.image_z * scale).tolist(), (center + config.image_z * scale).tolist()
        bounds = tuple(zip(low, high, strict=True))
        return cls(field.name, weights, tuple(center.tolist()), tuple(scale.tolist()), bounds)

    def apply(self, column: NDArray[Any], rows: Rows) -> None:
        # One product and one dot, then plain floats: numpy's mean/std cost 5x more on one row.
        linear = (column @ self.weights).tolist()
        squares = np.einsum("ij,ij->i", column, column).tolist()
        bounds = self.bounds
        for i, (brightness, red, green, blue) in enumerate(linear):
            contrast = math.sqrt(max(squares[i] / IMAGE_VALUES - brightness * brightness, 0.0))
            stats = (brightness, red, green, blue, contrast)
            if not all(low <= x <= high for x, (low, high) in zip(stats, bounds, strict=True)):
                rows[i].append(self._flag(stats))

    def _flag(self, stats: tuple[float, ...]) -> SkewFlag:
        z = [abs(x - c) / s for x, c, s in zip(stats, self.center, self.scale, strict=True)]
        j = z.index(max(z))
        far = f"{stats[j]:.1f} is {z[j]:.1f} standard deviations from the training mean {self.center[j]:.1f}"
        return SkewFlag("image_stats", self.name, f"{self.name} {_IMAGE_STATS[j]} {far}.")


_Check = _RangeCheck | _CategoryCheck | _TextCheck | _ImageCheck
_CHECKS: dict[str, type[_Check]] = {
    "numeric": _RangeCheck,
    "datetime": _RangeCheck,
    "categorical": _CategoryCheck,
    "text": _TextCheck,
    "image": _ImageCheck,
}
