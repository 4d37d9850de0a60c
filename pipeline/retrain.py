"""The ``retrain_if_drifted`` Prefect flow: monitor → train a candidate → gate → promote → reload.

    skewguard monitor (own process) ─► verdict ─┬─ no drift / undecided ─► record, stop
                                                └─ drift ─► train_cascade (the cascade file;
                                                            cached steps reused)
        ─► champion vs candidate on the most recent labeled window (their ONNX graphs)
        ─► candidate beats the champion by ``margin``? ─┬─ no ─► record, keep the champion
                                                          └─ yes ─► promote ─► gateway reloads
                                                                   (or, with a live period:
                                                                    attach it as a shadow or canary)

With a live period (``live_for``: requests the candidate answered, or a duration), a
candidate that passes offline is not promoted yet: it is attached beside the champion
(``skewguard.bentos.variants``) and the run records ``shadowing`` or ``canary``. A later run
with the same period — the next scheduled one — finds it attached and judges it instead of
training another: until the period is over, or while too few labels have arrived, it records
``waiting``; then the live comparison of the log since it was attached — ``skewguard compare``
in its own process, reading the log as the monitor does — goes through the live gate
(``skewguard.pipeline.gate``): a pass promotes it (the promotion also detaches it, in one
atomic change of the alias), a failure detaches it and keeps the champion.

The monitor runs as ``skewguard monitor`` in a child process: Evidently's memory stays out
of the flow, and the flow reads the served window the way an operator's job would, through
the prediction log, without importing the gateway. The candidate is trained from the
cascade file (given, or the one the champion was trained from). The comparison window is
the newest ``holdout`` share of the candidate's training set by time — the slice
``train_cascade`` holds out, so the candidate never fitted it, and the champion was trained
before it existed. Both cascades answer it as served: replayed through their stored,
hash-verified ONNX graphs, and scored with the task's metric.
Parity is already a gate inside packaging: a candidate whose graph disagrees with its
pipeline never reaches the store. Every decision, with its reasons and figures, is appended
to ``<home>/decisions.jsonl`` and published as a Prefect artifact.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from skewguard.bentos.aliases import Variant
from skewguard.bentos.manifest import CascadeManifest, champion_tag, load_manifest, promote
from skewguard.bentos.variants import attach_variant, detach_variant, variant_of
from skewguard.errors import ConfigError, SkewguardError
from skewguard.monitoring.comparison import Comparison
from skewguard.monitoring.job import load_reference
from skewguard.monitoring.replay import replay_cascade
from skewguard.pipeline import cascade
from skewguard.pipeline.flows import train_cascade
from skewguard.pipeline.gate import GateRules, LivePeriod, judge, parse_period
from skewguard.pipeline.training_set import split_by_time
from skewguard.settings import Settings

__all__ = ["DECISIONS_FILE", "read_decisions", "retrain_if_drifted"]

DECISIONS_FILE = "decisions.jsonl"
Metric = Literal["auto", "roc_auc", "log_loss", "accuracy", "mae", "rmse", "r2"]
LiveMode = Literal["shadow", "canary"]
DEFAULT_FRACTION = {"shadow": 1.0, "canary": 0.1}
"""A shadow copies every request unless told; a canary answers a tenth of the entities."""
_LOWER_IS_BETTER = {"log_loss", "mae", "rmse"}
MONITOR_TIMEOUT_S = 600
SKEW_PREFIX = "feature skew:"  # how monitoring.verdict.with_skew starts its reasons


@task(cache_policy=NO_CACHE)
def monitor_served(
    name: str,
    out_dir: str,
    last: int | None,
    min_rows: int | None,
    watch: Sequence[str],
    options: Sequence[str],
) -> dict[str, Any]:
    """Run ``skewguard monitor`` in its own process (``options`` passed on) and return its JSON summary."""
    command = [sys.executable, "-m", "skewguard", "monitor", name, "--out", out_dir]
    command += ["--min-rows", str(min_rows)] if min_rows else []
    command += ["--last", str(last)] if last else []
    for column in watch:
        command += ["--watch", column]
    command += list(options)
    done = subprocess.run(command, capture_output=True, text=True, timeout=MONITOR_TIMEOUT_S, check=False)
    print(done.stdout.strip())
    if done.returncode not in (0, 1):  # 1 = drift
        raise ConfigError(f"skewguard monitor failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    summary: dict[str, Any] = json.loads((Path(out_dir) / "drift-summary.json").read_text(encoding="utf-8"))
    return summary


@task(cache_policy=NO_CACHE)
def compare_cascades(champion: str, candidate: str, home: str, metric: Metric) -> dict[str, Any]:
    """Both cascades' scores on the newest held-out share of the candidate's training set, as served."""
    newer = load_manifest(candidate)
    reference = newer.reference
    if reference is None or reference.time_column is None:
        raise ConfigError(f"Candidate {candidate} records no reference set to compare on.", field="reference")
    _, recent = split_by_time(load_reference(newer, Path(home)), reference.time_column, reference.holdout)
    target = _final_target(newer)
    figures: dict[str, Any] = {
        "metric": resolve_metric(metric, newer, recent[target]),
        "window": _window(recent, reference.time_column),
    }
    for role, tag in (("champion", champion), ("candidate", candidate)):
        outputs = replay_cascade(load_manifest(tag), _decoded(recent))
        figures[role] = {"tag": tag} | cascade.score(recent[target].to_numpy(), _answers(outputs), newer.task)
    return figures


def resolve_metric(metric: Metric, manifest: CascadeManifest, y: pd.Series) -> str:
    """``auto``: ROC AUC for two classes, log loss for more, MAE for a regression."""
    if metric != "auto":
        return metric
    if manifest.task == "regression":
        return "mae"
    return "roc_auc" if y.nunique() == 2 else "log_loss"


def _final_target(manifest: CascadeManifest) -> str:
    if manifest.target is None:
        raise ConfigError(f"Cascade {manifest.tag} records no target column to score on.", field="target")
    return manifest.target


def _decoded(frame: pd.DataFrame) -> pd.DataFrame:
    from skewguard.bentos.images import decode_image

    out = frame.copy()
    for column in out.columns:
        first = next((v for v in out[column] if v is not None), None)
        if isinstance(first, bytes | bytearray):
            out[column] = [decode_image(bytes(v), field=str(column)) for v in out[column]]
    return out


def _answers(outputs: Any) -> pd.DataFrame:
    """Replayed outputs in the shape ``cascade.score`` reads: prediction and ``proba_<class>``."""
    frame = pd.DataFrame({"prediction": list(outputs.prediction)})
    probabilities = [p for p in outputs.probabilities if p is not None]
    if probabilities and len(probabilities) == len(frame):
        for key in probabilities[0]:
            frame[f"proba_{key}"] = [p.get(key, 0.0) for p in probabilities]
    return frame


def _window(frame: pd.DataFrame, time_column: str) -> dict[str, Any]:
    return {
        "rows": len(frame),
        "from": frame[time_column].min().isoformat(),
        "to": frame[time_column].max().isoformat(),
    }


def beats(figures: dict[str, Any], margin: float) -> tuple[bool, str]:
    """Whether the candidate beats the champion on the figures' metric by at least ``margin``, and why."""
    metric = figures["metric"]
    champ, cand = figures["champion"].get(metric), figures["candidate"].get(metric)
    if champ is None or cand is None:
        return False, f"{metric} undefined on the window (one class only, or too few rows)"
    gain = (champ - cand) if metric in _LOWER_IS_BETTER else (cand - champ)
    verdict = "beats" if gain >= margin else "does not beat"
    return gain >= margin, (
        f"candidate {metric} {cand:.4f} vs champion {champ:.4f} on {figures['window']['rows']} recent rows: "
        f"gain {gain:+.4f} {verdict} the margin {margin:g}"
    )


@task(cache_policy=NO_CACHE)
def reload_gateway(gateway_url: str | None, token: str | None, name: str, expected: str) -> str:
    """Ask the gateway to reload and check it serves ``expected``; without a URL, its alias watcher does."""
    if not gateway_url:
        return "no gateway URL given: gateways watching the champion alias reload within their poll interval"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=gateway_url.rstrip("/"), timeout=30.0, headers=headers) as client:
        client.post("/v1/admin/reload").raise_for_status()
        listed = client.get("/v1/cascades").json()
    served: dict[str, Any] = next((c for c in listed.get("cascades", []) if c.get("name") == name), {})
    if served.get("version") != expected:
        raise ConfigError(
            f"Gateway {gateway_url} serves {served.get('version')!r} after reload, not {expected!r}."
        )
    return f"gateway {gateway_url} reloaded and serves {expected}"


@flow(name="retrain_if_drifted", log_prints=True)
def retrain_if_drifted(
    name: str,
    *,
    file: str | None = None,
    last: int | None = None,
    min_rows: int | None = None,
    watch: Sequence[str] = (),
    monitor_options: Sequence[str] = (),
    margin: float = 0.005,
    metric: Metric = "auto",
    force: bool = False,
    gateway_url: str | None = None,
    token: str | None = None,
    live_for: str | None = None,
    live_mode: LiveMode = "shadow",
    live_fraction: float | None = None,
    gate: dict[str, Any] | None = None,
    labels: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Retrain cascade ``name`` when served traffic drifted; promote the candidate only if it is better.

    The candidate is trained from ``file``, else from the cascade file the champion was trained from.
    With ``live_for`` it must then also pass a live period as ``live_mode`` (at ``live_fraction``)
    and the live gate (``gate``: ``GateRules`` fields), scored on ``labels`` (default: the cascade
    file's data) joined to the prediction log.
    """
    settings = settings or Settings.from_env()
    decision = _begin(name, margin)
    period, rules = (parse_period(live_for) if live_for else None), GateRules(**(gate or {}))
    live = {"period": period, "rules": rules, "labels": labels, "metric": metric}
    if period is not None and (attached := variant_of(name)) is not None:
        return judge_attached(name, attached, decision, settings, live, gateway_url, token)
    source = _source_file(name, file, decision["champion"])
    out_dir = settings.home / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    summary = monitor_served(name, str(out_dir), last, min_rows, list(watch), list(monitor_options))
    verdict = summary["verdict"]
    decision["drift"] = _drift_figures(summary, out_dir)
    if not force and (why := no_retrain_reason(verdict)):
        return _record(settings, decision | {"decision": "no retrain", "reasons": [why]})
    try:
        trained = train_cascade(source, settings=settings)
    except SkewguardError as exc:  # e.g. the parity gate refused a model
        _record(settings, decision | {"decision": "kept champion", "reasons": [f"training failed: {exc}"]})
        raise
    candidate = trained["manifest"]
    decision |= {"candidate": candidate, "training_figures": trained["figures"]}
    figures = compare_cascades(decision["champion"], candidate, str(settings.home), metric)
    better, why = beats(figures, margin)
    decision |= {"comparison": figures, "metric": figures["metric"], "margin": margin}
    if not better:
        return _record(settings, decision | {"decision": "kept champion", "reasons": [why]})
    if period is not None:
        fraction = DEFAULT_FRACTION[live_mode] if live_fraction is None else live_fraction
        decision = start_live(name, candidate, live_mode, fraction, period, decision, gateway_url, token)
        return _record(settings, decision | {"reasons": [why, *decision["reasons"]]})
    promote(candidate)
    reloaded = reload_gateway(gateway_url, token, name, candidate)
    return _record(settings, decision | {"decision": "promoted", "reasons": [why, reloaded]})


def _drift_figures(summary: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    verdict = summary["verdict"]
    return {
        "verdict": verdict["drift"],
        "reasons": verdict["reasons"],
        "drifted_columns": _drifted_columns(summary),
        "report": str(out_dir),
    }


def _begin(name: str, margin: float) -> dict[str, Any]:
    """A decision's first figures: when, which cascade, its champion (which must exist)."""
    if margin < 0:
        raise ConfigError(f"margin is {margin}; expected 0 or more.", field="margin")
    champion = champion_tag(name)
    if champion is None:
        raise ConfigError(
            f"No champion cascade named {name!r}; run `skewguard train -f` first.", field="name"
        )
    return {"at": datetime.now(UTC).isoformat(), "cascade": name, "champion": champion}


def _source_file(name: str, file: str | None, champion: str) -> str:
    source = file or load_manifest(champion).source_file
    if source is None or not Path(source).is_file():
        raise ConfigError(
            f"Cascade {name!r}: its cascade file {source!r} is not there; give it with -f.", field="file"
        )
    return source


def start_live(
    name: str,
    candidate: str,
    mode: LiveMode,
    fraction: float,
    period: LivePeriod,
    decision: dict[str, Any],
    gateway_url: str | None,
    token: str | None,
) -> dict[str, Any]:
    """Attach the candidate beside the champion for its live period: the decision shadowing or canary."""
    variant = attach_variant(name, candidate, mode, fraction)
    reloaded = reload_gateway(gateway_url, token, name, decision["champion"])
    started = (
        f"attached as a {mode} at {fraction:g} for {period.describe()}; the next `skewguard retrain` with a "
        "live period judges it when that is over"
    )
    live = {"mode": mode, "fraction": fraction, "attached_at": variant.attached_at.isoformat()}
    outcome = "shadowing" if mode == "shadow" else "canary"
    return decision | {"decision": outcome, "reasons": [started, reloaded], "live": live}


@task(cache_policy=NO_CACHE)
def compare_live_traffic(name: str, candidate: str, labels: str | None, metric: str) -> Comparison:
    """``skewguard compare`` in its own process: the log since the candidate was attached, as figures."""
    command = [sys.executable, "-m", "skewguard", "compare", name, "--candidate", candidate, "--json"]
    command += ["--metric", metric, *(["--labels", labels] if labels else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=MONITOR_TIMEOUT_S, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        raise ConfigError(re.sub(r"^error \([a-z_]+\): ", "", lines[-1]), field="candidate")
    return Comparison.from_dict(json.loads(done.stdout))


def judge_attached(
    name: str,
    attached: Variant,
    decision: dict[str, Any],
    settings: Settings,
    live: dict[str, Any],
    gateway_url: str | None,
    token: str | None,
) -> dict[str, Any]:
    """Judge the variant attached to ``name`` once its period is over: promote it, detach it, or wait."""
    period: LivePeriod = live["period"]
    since = attached.attached_at.timestamp()
    elapsed = datetime.now(UTC).timestamp() - since
    figures: dict[str, Any] = {
        "mode": attached.mode,
        "fraction": attached.fraction,
        "attached_at": attached.attached_at.isoformat(),
        "period": period.describe(),
        "elapsed_s": round(elapsed, 1),
    }
    decision |= {"candidate": attached.tag, "live": figures}
    try:
        found = compare_live_traffic(name, attached.tag, live["labels"], live["metric"])
    except ConfigError as exc:  # nothing of the candidate logged yet, or labels that cannot be read
        return _record(settings, decision | {"decision": "waiting", "reasons": [exc.message]})
    figures |= {"requests": found.candidate.requests, "comparison": found.to_dict()}
    if not period.is_complete(found.candidate.requests, elapsed):
        answered = found.candidate.requests
        why = f"the {attached.mode} answered {answered} requests in {elapsed:.0f} s of {period.describe()}"
        return _record(settings, decision | {"decision": "waiting", "reasons": [why]})
    verdict = judge(found, live["rules"])
    figures["gate"] = verdict.to_dict()
    if verdict.status == "pending":
        return _record(settings, decision | {"decision": "waiting", "reasons": verdict.reasons("pending")})
    if verdict.status == "fail":
        detach_variant(name)
        reasons = [*verdict.reasons("fail"), f"{attached.mode} {attached.tag} detached"]
        return _record(settings, decision | {"decision": "kept champion", "reasons": reasons})
    promote(attached.tag)  # one change of the alias: the new champion, and no variant
    reloaded = reload_gateway(gateway_url, token, name, attached.tag)
    return _record(settings, decision | {"decision": "promoted", "reasons": [*verdict.reasons(), reloaded]})


def no_retrain_reason(verdict: dict[str, Any]) -> str | None:
    """Why this verdict does not call for a new model; None when it does."""
    if verdict["drift"] is None:
        return "undecided: not enough served rows"
    if not verdict["drift"]:
        return "no drift"
    if all(reason.startswith(SKEW_PREFIX) for reason in verdict["reasons"]):
        return "feature skew only: the online store serves values training would not see; re-materialize it"
    return None


def _drifted_columns(summary: dict[str, Any]) -> dict[str, list[str]]:
    """Per scope (overall, then each branch), the columns whose drift test failed."""
    scopes = {"overall": summary["overall"], **summary.get("branches", {})}
    return {
        scope: sorted(name for name, column in found["columns"].items() if column.get("drifted"))
        for scope, found in scopes.items()
    }


def scheduled_deployment(cron: str, parameters: dict[str, Any]) -> Any:
    """``retrain_if_drifted`` as a Prefect deployment run on ``cron`` (served by ``prefect.serve``).

    The parameters are checked against the flow's signature here, not at the first run.
    """
    try:
        return retrain_if_drifted.to_deployment(
            name=f"retrain-{parameters['name']}", cron=cron, parameters=parameters
        )
    except ValueError as exc:  # a bad cron line
        raise ConfigError(f"Schedule {cron!r} is not a valid cron line: {exc}", field="schedule") from exc


def read_decisions(home: Path) -> list[dict[str, Any]]:
    """Every recorded decision, oldest first."""
    path = home / DECISIONS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _record(settings: Settings, decision: dict[str, Any]) -> dict[str, Any]:
    """Append the decision to the decisions file and publish it as a Prefect artifact."""
    path = settings.home / DECISIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(decision, default=str) + "\n")
    lines = [f"**{decision['decision']}** for cascade `{decision['cascade']}`", ""]
    lines += [f"- {reason}" for reason in decision.get("reasons", [])]
    lines += [f"- drift: {r}" for r in decision.get("drift", {}).get("reasons", [])]
    gate = decision.get("live", {}).get("gate")
    if gate is not None:
        lines += ["", "| live gate rule | status | figure | limit |", "|---|---|---|---|"]
        lines += [
            f"| {c['rule']} | {c['status']} | {_cell(c['figure'])} | {_cell(c['limit'])} |"
            for c in gate["checks"]
        ]
    create_markdown_artifact(
        markdown="\n".join(lines), key=_artifact_key(decision["cascade"]), description="retrain decision"
    )
    print(f"decision: {decision['decision']} — {'; '.join(decision.get('reasons', []))}")
    return decision


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _artifact_key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "retrain-" + re.sub(r"[^a-z0-9-]+", "-", name.lower())
