"""The live comparison: a champion and its candidate on the traffic they served, read from the log.

What the log holds decides what can be compared:

    shadow   both answered the same rows (the candidate's answer is logged beside the
             champion's): paired figures — how often they agree (classification) or how their
             answers differ (regression), and the metric's gain on the very same rows;
    canary   each answered its own share of the entities: two samples side by side.

Per variant: rows and requests, each branch's share of the routing, latency p50/p99 per
request, the rate of each skew-flag kind (the share of rows raising it), errors (and shadow
copies shed under load), and — for rows whose label has arrived (``skewguard.monitoring.labels``)
— its metric with a 95 % bootstrap interval. Between them: the distance between their output
distributions (Jensen–Shannon between predicted labels, 1-Wasserstein between P(positive)
or between regression answers) and the metric's gain, candidate minus champion oriented so
that positive is better, with its interval: a paired bootstrap (the same resampled rows for
both) for a shadow, two independent resamples for a canary. The bootstrap is seeded and
resamples the rows in an order of their content, so the same rows give the same figures
however their concurrent requests happened to be logged.

Pure: records and labels in, a ``Comparison`` out; no I/O. The scoring is
``skewguard.monitoring.scoring``; the gate that reads it is
``skewguard.pipeline.gate``.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from skewguard.errors import ConfigError
from skewguard.monitoring.labels import RowKey
from skewguard.monitoring.scoring import RESAMPLES, Estimate, Scorer, bootstrap, label_key

Mode = Literal["shadow", "canary"]
Task = Literal["classification", "regression"]
METRICS = ("auto", "roc_auc", "log_loss", "accuracy", "mae", "rmse", "r2")


@dataclass(frozen=True, slots=True)
class VariantFigures:
    """What one variant did in the window."""

    version: str
    rows: int
    requests: int
    routes: dict[str, float]
    """Branch → its share of this variant's rows."""
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    flag_rates: dict[str, float]
    """Skew-flag kind → the share of this variant's rows that raised it."""
    errors: int
    """Requests the candidate failed (a shadow's error, or a canary the champion answered for)."""
    dropped: int = 0
    """Shadow copies shed under load before they ran."""
    metric: Estimate | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Champion versus candidate in one window of the log."""

    cascade: str
    mode: Mode
    task: Task
    window: tuple[float, float] | None
    champion: VariantFigures
    candidate: VariantFigures
    paired_rows: int
    """Rows both answered (shadow); 0 for a canary."""
    agreement: float | None
    """Classification, shadow: the share of paired rows given the same label."""
    differences: dict[str, float] | None
    """Regression, shadow: candidate − champion on paired rows (mean, mean_abs, p5, p50, p95)."""
    distance: dict[str, float]
    metric: str | None
    labeled_rows: int
    gain: Estimate | None
    """The metric, candidate vs champion, positive = better; None without labels."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """The comparison ``to_dict`` (and ``skewguard compare --json``) wrote."""

        def estimate(value: Mapping[str, Any] | None) -> Estimate | None:
            return None if value is None else Estimate(**value)

        def figures(value: Mapping[str, Any]) -> VariantFigures:
            return VariantFigures(**{**value, "metric": estimate(value.get("metric"))})

        window = data.get("window")
        return cls(
            **{
                **data,
                "window": None if window is None else (float(window[0]), float(window[1])),
                "champion": figures(data["champion"]),
                "candidate": figures(data["candidate"]),
                "gain": estimate(data.get("gain")),
            }
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    key: RowKey
    prediction: Any
    probabilities: Mapping[str, float] | None
    route: str
    flags: frozenset[str]
    latency_ms: float | None


def find_candidate(records: Sequence[Mapping[str, Any]]) -> tuple[str, Mode] | None:
    """The candidate the newest records speak of, and how it was attached; None if none did."""
    for record in reversed(records):
        entry = record.get("candidate")
        if isinstance(entry, Mapping) and entry.get("variant") in ("shadow", "canary"):
            return str(entry["version"]), entry["variant"]
        if record.get("variant") == "canary":
            return str(record["versions"]["cascade"]), "canary"
    return None


def compare_live(
    records: Sequence[Mapping[str, Any]],
    *,
    cascade: str,
    task: Task,
    candidate: str | None = None,
    labels: Mapping[RowKey, Any] | None = None,
    metric: str = "auto",
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """The champion and ``candidate`` (default: the newest one logged) on the records of ``cascade``."""
    mine = [r for r in records if r.get("cascade") == cascade]
    found = find_candidate(mine) if candidate is None else _mode_of(mine, candidate)
    if found is None:
        raise ConfigError(
            f"No logged rows of cascade {cascade!r} show a shadow or canary answer in this window; attach "
            "one (`skewguard cascade shadow|canary`) and send traffic first.",
            field="candidate",
        )
    tag, mode = found
    champion, challenger, errors, dropped = (_shadow_sides if mode == "shadow" else _canary_sides)(mine, tag)
    if not champion or not challenger:
        raise ConfigError(
            f"Cascade {cascade!r}: the window has {len(champion)} champion and {len(challenger)} answers of "
            f"{tag} to compare; send more traffic or widen the window.",
            field="window",
        )
    labels = labels or {}
    name = _metric_name(metric, task, [labels[a.key] for a in champion + challenger if a.key in labels])
    estimates = _estimates(name, mode, champion, challenger, labels, resamples, seed)
    return Comparison(
        cascade=cascade,
        mode=mode,
        task=task,
        window=_window(mine),
        champion=_figures(_version(mine), champion, 0, 0, estimates[0]),
        candidate=_figures(tag, challenger, errors, dropped, estimates[1]),
        paired_rows=len(challenger) if mode == "shadow" else 0,
        agreement=_agreement(champion, challenger) if mode == "shadow" and task == "classification" else None,
        differences=_differences(champion, challenger) if mode == "shadow" and task == "regression" else None,
        distance=_distance(champion, challenger, task),
        metric=name,
        labeled_rows=estimates[2],
        gain=estimates[3],
    )


def _mode_of(records: Sequence[Mapping[str, Any]], tag: str) -> tuple[str, Mode] | None:
    for record in reversed(records):
        entry = record.get("candidate")
        if (
            isinstance(entry, Mapping)
            and entry.get("version") == tag
            and entry.get("variant") in ("shadow", "canary")
        ):
            return tag, entry["variant"]
        if record.get("variant") == "canary" and record["versions"].get("cascade") == tag:
            return tag, "canary"
    return None


def _shadow_sides(
    records: Sequence[Mapping[str, Any]], tag: str
) -> tuple[list[_Answer], list[_Answer], int, int]:
    """The rows both answered (the champion's and the shadow's answers, aligned), errors, drops."""
    champion, shadow = [], []
    errors, dropped = set(), 0
    for record in records:
        entry = record.get("candidate")
        if not isinstance(entry, Mapping) or entry.get("version") != tag or entry.get("variant") != "shadow":
            continue
        if entry.get("dropped"):
            dropped += 1
        elif "error" in entry:
            errors.add(record["request_id"])
        else:
            champion.append(_answer(record, record))
            shadow.append(_answer(record, entry))
    return champion, shadow, len(errors), dropped


def _canary_sides(
    records: Sequence[Mapping[str, Any]], tag: str
) -> tuple[list[_Answer], list[_Answer], int, int]:
    """The champion's rows and the canary's rows, and the requests the canary failed on."""
    champion, canary, errors = [], [], set()
    for record in records:
        entry = record.get("candidate")
        if record.get("variant") == "canary" and record["versions"].get("cascade") == tag:
            canary.append(_answer(record, record))
        elif record.get("variant", "champion") == "champion":
            champion.append(_answer(record, record))
            if isinstance(entry, Mapping) and entry.get("version") == tag and "error" in entry:
                errors.add(record["request_id"])
    return champion, canary, len(errors), 0


def _answer(record: Mapping[str, Any], source: Mapping[str, Any]) -> _Answer:
    flags = source.get("flags") or []
    return _Answer(
        key=(str(record["request_id"]), int(record["row"])),
        prediction=source.get("prediction"),
        probabilities=source.get("probabilities"),
        route=str(source.get("route")),
        flags=frozenset(str(flag.get("kind")) for flag in flags),
        latency_ms=source.get("latency_ms"),
    )


def _version(records: Sequence[Mapping[str, Any]]) -> str:
    served = Counter(
        r["versions"].get("cascade", "") for r in records if r.get("variant", "champion") == "champion"
    )
    return served.most_common(1)[0][0] if served else ""


def _figures(
    version: str, answers: Sequence[_Answer], errors: int, dropped: int, metric: Estimate | None
) -> VariantFigures:
    n = len(answers)
    latencies = {a.key[0]: a.latency_ms for a in answers if a.latency_ms is not None}
    p50, p99 = (
        (float(v) for v in np.percentile(list(latencies.values()), [50, 99])) if latencies else (None, None)
    )
    kinds = Counter(kind for a in answers for kind in a.flags)
    return VariantFigures(
        version=version,
        rows=n,
        requests=len({a.key[0] for a in answers}),
        routes={route: count / n for route, count in sorted(Counter(a.route for a in answers).items())},
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        flag_rates={kind: count / n for kind, count in sorted(kinds.items())},
        errors=errors,
        dropped=dropped,
        metric=metric,
    )


def _agreement(champion: Sequence[_Answer], candidate: Sequence[_Answer]) -> float:
    same = sum(str(a.prediction) == str(b.prediction) for a, b in zip(champion, candidate, strict=True))
    return same / len(champion)


def _differences(champion: Sequence[_Answer], candidate: Sequence[_Answer]) -> dict[str, float]:
    diff = np.array(
        [float(b.prediction) - float(a.prediction) for a, b in zip(champion, candidate, strict=True)]
    )
    p5, p50, p95 = (float(v) for v in np.percentile(diff, [5, 50, 95]))
    return {
        "mean": float(diff.mean()),
        "mean_abs": float(np.abs(diff).mean()),
        "p5": p5,
        "p50": p50,
        "p95": p95,
    }


def _distance(champion: Sequence[_Answer], candidate: Sequence[_Answer], task: Task) -> dict[str, float]:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    if task == "regression":
        a = [float(x.prediction) for x in champion]
        b = [float(x.prediction) for x in candidate]
        return {"wasserstein_prediction": float(wasserstein_distance(a, b))}
    classes = sorted({str(x.prediction) for x in (*champion, *candidate)})
    p = [sum(str(x.prediction) == c for x in champion) / len(champion) for c in classes]
    q = [sum(str(x.prediction) == c for x in candidate) / len(candidate) for c in classes]
    found = {"jensen_shannon_labels": float(jensenshannon(p, q, base=2)) if len(classes) > 1 else 0.0}
    positive = _positive_class(champion)
    if positive is not None:
        a = [float((x.probabilities or {}).get(positive, 0.0)) for x in champion]
        b = [float((x.probabilities or {}).get(positive, 0.0)) for x in candidate]
        found[f"wasserstein_p{positive}"] = float(wasserstein_distance(a, b))
    return found


def _positive_class(answers: Sequence[_Answer]) -> str | None:
    """The positive class of a two-class answer (the greater of the two keys), else None."""
    first = next((a.probabilities for a in answers if a.probabilities), None)
    return sorted(first)[-1] if first is not None and len(first) == 2 else None


def _metric_name(metric: str, task: Task, labels: Sequence[Any]) -> str | None:
    """``auto``: ROC AUC for two classes, log loss for more, MAE for a regression; None without labels."""
    if metric not in METRICS:
        raise ConfigError(f"Metric {metric!r}: expected one of {', '.join(METRICS)}.", field="metric")
    if not labels:
        return None
    if metric != "auto":
        return metric
    if task == "regression":
        return "mae"
    return "roc_auc" if len({str(y) for y in labels}) <= 2 else "log_loss"


def _estimates(
    name: str | None,
    mode: Mode,
    champion: Sequence[_Answer],
    candidate: Sequence[_Answer],
    labels: Mapping[RowKey, Any],
    resamples: int,
    seed: int,
) -> tuple[Estimate | None, Estimate | None, int, Estimate | None]:
    """Each variant's metric, the labeled rows, and the gain — all None without labels."""
    if name is None:
        return None, None, 0, None
    rng = np.random.default_rng(seed)
    if mode == "shadow":  # the same rows: resample them once for both
        pairs = [(a, b) for a, b in zip(champion, candidate, strict=True) if a.key in labels]
        pairs.sort(key=lambda pair: _content(labels[pair[0].key], *pair))
        y = [labels[a.key] for a, _ in pairs]
        mine, theirs = _scorer(name, y, [a for a, _ in pairs]), _scorer(name, y, [b for _, b in pairs])
        draws = [rng.integers(0, len(y), len(y)) for _ in range(resamples)] if y else []
        champ, cand, gain = bootstrap(mine, theirs, draws, draws)
        return champ, cand, len(y), gain
    a_rows = sorted((a for a in champion if a.key in labels), key=lambda a: _content(labels[a.key], a))
    b_rows = sorted((b for b in candidate if b.key in labels), key=lambda b: _content(labels[b.key], b))
    mine = _scorer(name, [labels[a.key] for a in a_rows], a_rows)
    theirs = _scorer(name, [labels[b.key] for b in b_rows], b_rows)
    a_draws = [rng.integers(0, len(a_rows), len(a_rows)) for _ in range(resamples)] if a_rows else []
    b_draws = [rng.integers(0, len(b_rows), len(b_rows)) for _ in range(resamples)] if b_rows else []
    champ, cand, gain = bootstrap(mine, theirs, a_draws, b_draws)
    return champ, cand, len(a_rows) + len(b_rows), gain


def _scorer(name: str, y: Sequence[Any], answers: Sequence[_Answer]) -> Scorer:
    return Scorer(name, y, [a.prediction for a in answers], [a.probabilities for a in answers])


def _content(label: Any, *answers: _Answer) -> tuple[str, ...]:
    """A row's label and answers as text: resampling rows in this order makes the intervals depend on
    what was served, not on the order concurrent requests happened to be logged in."""
    shown = (
        json.dumps([a.prediction, a.probabilities, a.route], sort_keys=True, default=str) for a in answers
    )
    return (label_key(label), *shown)


def _window(records: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    stamps = [float(r["ts"]) for r in records]
    return (min(stamps), max(stamps)) if stamps else None


def describe_comparison(found: Comparison) -> list[str]:
    """The comparison as lines of text (``skewguard compare`` prints them; the drift report shows them)."""
    a, b = found.champion, found.candidate
    lines = [
        f"{found.cascade}: champion {a.version} vs {found.mode} {b.version}"
        + (f" on {found.paired_rows} paired rows" if found.mode == "shadow" else ""),
        f"{'':<26}{'champion':>26}{'candidate':>26}",
        _pair("rows (requests)", f"{a.rows} ({a.requests})", f"{b.rows} ({b.requests})"),
        _pair("latency p50 / p99 ms", _ms(a), _ms(b)),
        _pair("errors / shed", f"{a.errors} / {a.dropped}", f"{b.errors} / {b.dropped}"),
    ]
    for route in sorted(set(a.routes) | set(b.routes)):
        lines.append(_pair(f"route {route}", _pct(a.routes.get(route, 0.0)), _pct(b.routes.get(route, 0.0))))
    for kind in sorted(set(a.flag_rates) | set(b.flag_rates)):
        lines.append(
            _pair(f"flag {kind}", _pct(a.flag_rates.get(kind, 0.0)), _pct(b.flag_rates.get(kind, 0.0)))
        )
    if found.metric is not None and a.metric is not None and b.metric is not None:
        lines.append(
            _pair(f"{found.metric} ({found.labeled_rows} labeled)", _interval(a.metric), _interval(b.metric))
        )
    if found.agreement is not None:
        lines.append(f"agreement: {found.agreement:.2%} of the paired rows get the same label")
    if found.differences is not None:
        d = found.differences
        lines.append(
            f"candidate − champion: mean {d['mean']:+.4g}, mean |.| {d['mean_abs']:.4g}, "
            f"p5 {d['p5']:+.4g}, p50 {d['p50']:+.4g}, p95 {d['p95']:+.4g}"
        )
    lines.append("distance of the outputs: " + ", ".join(f"{k} {v:.4f}" for k, v in found.distance.items()))
    if found.gain is not None:
        lines.append(f"gain in {found.metric} (positive = candidate better): {_interval(found.gain, '+')}")
    elif found.metric is None:
        lines.append("no labels joined yet: no metric, no gain")
    return lines


def _pair(label: str, left: str, right: str) -> str:
    return f"{label:<26}{left:>26}{right:>26}"


def _ms(figures: VariantFigures) -> str:
    if figures.latency_p50_ms is None or figures.latency_p99_ms is None:
        return "-"
    return f"{figures.latency_p50_ms:.2f} / {figures.latency_p99_ms:.2f}"


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _interval(estimate: Estimate, sign: str = "") -> str:
    if estimate.value is None:
        return "undefined"
    value = f"{estimate.value:{sign}.4f}"
    if estimate.low is None or estimate.high is None:
        return value
    return f"{value} [{estimate.low:{sign}.4f}, {estimate.high:{sign}.4f}]"
