"""Operator commands: serve, monitor, compare, retrain, demo traffic, the reports index, the log's
retention, the champion's import from the model export."""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from skewguard.cli_examples import REQUESTS_DIR
from skewguard.cli_options import OPTIONAL_CASCADE_FILE, quiet_third_parties
from skewguard.errors import ConfigError
from skewguard.gateway.settings import GatewaySettings


@click.command("serve")
@click.option("--host", default=None, help="Default: SKEWGUARD_HOST or 127.0.0.1.")
@click.option("--port", type=int, default=None, help="Default: SKEWGUARD_PORT or 8000.")
@click.pass_obj
def serve(settings: GatewaySettings, host: str | None, port: int | None) -> None:
    """Serve the champion cascades through the gateway (POST /v1/cascades/{name}/predict)."""
    from skewguard.gateway.server import serve as run_gateway

    settings = settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    run_gateway(settings, announce=lambda names: click.echo(_ready_message(settings, names)))


def _ready_message(settings: Any, names: list[str]) -> str:
    """What `serve` prints once it answers: where, and a curl per cascade with a request to try."""
    base = f"http://{settings.display_host}:{settings.port}"
    lines = [f"gateway ready on {base}, serving {', '.join(names) or 'no cascade'}  (docs: {base}/docs)"]
    # In double quotes, so that the shell expands the variable.
    auth = ' -H "authorization: Bearer $SKEWGUARD_API_TOKEN"' if settings.api_token else ""
    for name in names:
        example = settings.home / REQUESTS_DIR / f"{name}.json"
        if example.exists():
            where, body = _body_path(example, settings.home)
            lines.append(
                f"try{where}:  curl -s {base}/v1/cascades/{name}/predict -H 'content-type: application/json'"
                f"{auth} -d @{body}"
            )
    return "\n".join(lines)


@click.command("monitor")
@click.argument("name", required=False)
@OPTIONAL_CASCADE_FILE
@click.option("--since", type=float, default=None, help="Only rows logged after this epoch second.")
@click.option("--last", type=int, default=None, help="Only the newest N logged rows.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Default: a new <home>/reports/<UTC time>."
)
@click.option("--min-rows", type=int, default=None, help="Fewer served rows: no verdict [cascade's default].")
@click.option("--watch", multiple=True, help="Columns whose drift alone makes a verdict [cascade's default].")
@click.option(
    "--skew/--no-skew",
    default=True,
    show_default=True,
    help="Compare served online features with Feast's point-in-time offline values.",
)
@click.option(
    "--skew-threshold", type=float, default=None, help="Mismatching share that is skew [cascade's]."
)
@click.option(
    "--skew-at", default=None, help="Request field with the time to compare at [the event time field]."
)
@click.pass_obj
def monitor(
    settings: GatewaySettings,
    name: str | None,
    file: Path | None,
    since: float | None,
    last: int | None,
    out: Path | None,
    min_rows: int | None,
    watch: tuple[str, ...],
    skew: bool,
    skew_threshold: float | None,
    skew_at: str | None,
) -> None:
    """Compare served traffic with the champion's training data (Evidently); exit 1 on drift or skew."""
    from skewguard.monitoring.job import run_monitor
    from skewguard.predictionlog.records import read_records

    cascade = cascade_name(name, file)
    records = read_records(settings.prediction_log_url, since=since)
    if last is not None:
        records = records[-last:]
    result = run_monitor(
        cascade,
        records,
        settings,
        out or new_run_folder(settings.home),
        skew=skew,
        min_rows=min_rows,
        watch=watch or None,
        skew_threshold=skew_threshold,
        skew_at=skew_at,
        labels=cascade_labels(cascade, None) if _has_variant(records, cascade) else None,
    )
    verdict = result.summary.verdict
    click.echo(f"{len(records)} served rows of {cascade}; drift: {verdict.drift}")
    for reason in verdict.reasons:
        click.echo(f"  - {reason}")
    if result.skew is not None:
        click.echo(f"feature skew: {', '.join(result.skew.skewed_features) or 'none'}")
    if result.comparison is not None:
        from skewguard.monitoring.comparison import describe_comparison

        click.echo("\n".join(describe_comparison(result.comparison)))
    click.echo(f"report: {result.html}\nsummary: {result.summary_json}\nmetrics: {result.metrics}")
    if verdict.drift:
        sys.exit(1)


def _has_variant(records: list[dict[str, Any]], name: str) -> bool:
    from skewguard.monitoring.comparison import find_candidate

    return find_candidate([r for r in records if r.get("cascade") == name]) is not None


def cascade_labels(name: str, path: Path | None) -> Any:
    """The labels to score a live comparison on: ``path``, else the data of the champion's cascade file."""
    from skewguard.bentos.manifest import champion
    from skewguard.monitoring.labels import label_columns, read_labels
    from skewguard.pipeline.cascade_file import labeled_data

    manifest = champion(name)
    if manifest is None:
        raise ConfigError(f"No champion cascade named {name!r}.", field="name")
    path = path or labeled_data(manifest.source_file)
    if path is None:
        return None
    columns = label_columns(manifest.target, manifest.entity_key, manifest.event_time_field)
    return read_labels(path, columns)


@click.command("compare")
@click.argument("name", required=False)
@OPTIONAL_CASCADE_FILE
@click.option(
    "--since",
    callback=lambda ctx, param, value: _age_seconds(ctx, param, value),
    default=None,
    help="Only rows served within this age: 2h, 90m, 7d [since the variant was attached, else all].",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A .csv/.parquet of the target with the entity key and event time field (or request_id, row) "
    "[the data file of the champion's cascade file].",
)
@click.option("--no-labels", is_flag=True, help="Compare without labels: no metric, no gain.")
@click.option("--candidate", default=None, help="The candidate's tag [the newest one logged].")
@click.option(
    "--metric",
    type=click.Choice(["auto", "roc_auc", "log_loss", "accuracy", "mae", "rmse", "r2"]),
    default="auto",
    show_default=True,
    help="auto: ROC AUC (two classes), log loss (more), MAE (regression).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def compare(
    settings: GatewaySettings,
    name: str | None,
    file: Path | None,
    since: float | None,
    labels: Path | None,
    no_labels: bool,
    candidate: str | None,
    metric: str,
    as_json: bool,
) -> None:
    """Compare the champion with its shadow or canary on the requests they served (from the log)."""
    import json

    from skewguard.bentos.variants import variant_of
    from skewguard.monitoring.comparison import describe_comparison
    from skewguard.monitoring.live import compare_served
    from skewguard.predictionlog.records import read_records

    cascade = cascade_name(name, file)
    attached = variant_of(cascade)
    start = time.time() - since if since else (attached.attached_at.timestamp() if attached else None)
    records = read_records(settings.prediction_log_url, since=start)
    table = None if no_labels else cascade_labels(cascade, labels)
    found = compare_served(cascade, records, labels=table, candidate=candidate, metric=metric)
    click.echo(json.dumps(found.to_dict(), indent=1) if as_json else "\n".join(describe_comparison(found)))


def cascade_name(name: str | None, file: Path | None) -> str:
    """The cascade a command acts on: NAME, or the name in the cascade file (exactly one of them)."""
    if (name is None) == (file is None):
        raise click.UsageError("Give a cascade NAME or -f <cascade file>, not both and not neither.")
    if file is None:
        assert name is not None
        return name
    from skewguard.pipeline.cascade_file import load_cascade_file

    return load_cascade_file(file).spec.name


def new_run_folder(home: Path) -> Path:
    """A folder per monitor run, so `skewguard reports serve` lists the history."""
    return home / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _body_path(example: Path, home: Path) -> tuple[str, Path]:
    """How to name the example body: relative to where serve started, else to the home folder.

    In a container the home is a path inside it (the operator mounted their own folder
    there), which means nothing on the operator's side: name the file from the home instead.
    """
    try:
        return "", example.resolve().relative_to(Path.cwd())
    except ValueError:
        return " (from your skewguard home folder)", example.relative_to(home)


@click.command("retrain")
@click.argument("name", required=False)
@OPTIONAL_CASCADE_FILE
@click.option("--last", type=int, default=None, help="Monitor the newest N logged rows (default: all).")
@click.option("--min-rows", type=int, default=None, help="Fewer served rows: no verdict, no retrain.")
@click.option("--watch", multiple=True, help="Columns whose drift alone makes a verdict [cascade's default].")
@click.option("--skew-at", default=None, help="Passed to the monitor: request field with the feature time.")
@click.option("--margin", default=0.005, show_default=True, help="How much better the candidate must be.")
@click.option(
    "--metric",
    type=click.Choice(["auto", "roc_auc", "log_loss", "accuracy", "mae", "rmse", "r2"]),
    default="auto",
    show_default=True,
    help="auto: ROC AUC (two classes), log loss (more), MAE (regression).",
)
@click.option("--force", is_flag=True, help="Train a candidate even without drift (the gate still applies).")
@click.option("--gateway-url", default=None, help="Gateway to reload after a promotion (admin endpoint).")
@click.option("--schedule", default=None, help="A cron line: serve the flow as a Prefect deployment on it.")
@click.option(
    "--shadow-for",
    default=None,
    help="Before promoting, run a candidate that passed offline as a shadow for N requests (2000) or a "
    "duration (2h); a later run judges it by the live gate.",
)
@click.option("--canary-for", default=None, help="The same as a canary answering a share of the entities.")
@click.option("--shadow-fraction", type=float, default=None, help="Share of requests the shadow copies [1].")
@click.option("--canary-share", type=float, default=None, help="Share of entities the canary answers [0.1].")
@click.option(
    "--min-agreement", type=float, default=0.75, show_default=True, help="Live gate: shadow agreement."
)
@click.option(
    "--min-gain",
    type=float,
    default=0.0,
    show_default=True,
    help="Live gate: the metric gain needed on labeled rows; its 95% interval must lie above zero too.",
)
@click.option(
    "--min-labeled", type=int, default=200, show_default=True, help="Live gate: labeled rows needed."
)
@click.option(
    "--max-new-flag-rate",
    type=float,
    default=0.01,
    show_default=True,
    help="Live gate: how much more often than the champion the candidate may raise a skew-flag kind.",
)
@click.option(
    "--max-p99-ratio", type=float, default=1.5, show_default=True, help="Live gate: p99 vs champion."
)
@click.option(
    "--max-error-rate", type=float, default=0.01, show_default=True, help="Live gate: failed share."
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Live gate: labels to score on [the data file of the cascade file].",
)
@click.pass_obj
def retrain(
    settings: GatewaySettings, /, name: str | None, file: Path | None, schedule: str | None, **options: Any
) -> None:
    """Run the retrain_if_drifted flow: monitor, retrain on drift, promote only a better candidate.

    With --shadow-for or --canary-for the candidate first serves beside the champion; the next run
    with the same option promotes it only if the live comparison passes the live gate.
    """
    from skewguard.pipeline.retrain import retrain_if_drifted, scheduled_deployment

    if not click.get_current_context().meta.get("verbose"):
        quiet_third_parties(feast=True)

    parameters: dict[str, Any] = {
        "name": cascade_name(name, file),
        "file": str(file) if file else None,
        "last": options["last"],
        "min_rows": options["min_rows"],
        "watch": list(options["watch"]),
        "monitor_options": ["--skew-at", options["skew_at"]] if options["skew_at"] else [],
        "margin": options["margin"],
        "metric": options["metric"],
        "force": options["force"],
        "gateway_url": options["gateway_url"],
        "token": settings.api_token.get_secret_value() if settings.api_token else None,
        **_live_parameters(options),
    }
    if schedule:
        from prefect import serve as serve_deployments

        deployment = scheduled_deployment(schedule, parameters)
        click.echo(f"serving {deployment.name} on the schedule {schedule!r} (Ctrl-C stops)")
        serve_deployments(deployment)
        return
    decision = retrain_if_drifted(**parameters, settings=settings)
    click.echo(f"decision: {decision['decision']}")
    for reason in decision.get("reasons", []):
        click.echo(f"  - {reason}")


def _live_parameters(options: dict[str, Any]) -> dict[str, Any]:
    """The flow's live-period parameters from the retrain options (none without a period)."""
    if options["shadow_for"] and options["canary_for"]:
        raise click.UsageError("Give --shadow-for or --canary-for, not both.")
    if not (options["shadow_for"] or options["canary_for"]):
        return {}
    mode = "shadow" if options["shadow_for"] else "canary"
    rules = (
        "min_agreement",
        "min_gain",
        "min_labeled",
        "max_new_flag_rate",
        "max_p99_ratio",
        "max_error_rate",
    )
    return {
        "live_for": options["shadow_for"] or options["canary_for"],
        "live_mode": mode,
        "live_fraction": options["shadow_fraction"] if mode == "shadow" else options["canary_share"],
        "gate": {rule: options[rule] for rule in rules},
        "labels": str(options["labels"]) if options["labels"] else None,
    }


@click.command("demo-traffic")
@click.argument("name", default="returns")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The returns example's folder (default: the shipped one).",
)
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The gateway.")
@click.option("--orders", "n_orders", default=1_500, show_default=True, help="Orders to send.")
@click.option("--days", default=14, show_default=True, help="Days the orders span (after the labeled data).")
@click.option("--seed", default=1, show_default=True, help="Any seed but 0 (the training data's).")
@click.option("--price-inflation", default=1.0, show_default=True)
@click.option("--unseen-category", default=0.0, show_default=True, help="Share of orders in a new category.")
@click.option("--vocabulary-shift", default=0.0, show_default=True, help="Share of words never seen.")
@click.option("--send/--no-send", default=True, show_default=True, help="Send the orders to the gateway.")
@click.option("--label", is_flag=True, help="Then add the orders with their labels to the labeled data.")
@click.pass_obj
def demo_traffic(
    settings: GatewaySettings,
    /,
    name: str,
    folder: Path | None,
    n_orders: int,
    seed: int,
    send: bool,
    label: bool,
    **knobs: Any,
) -> None:
    """Send the returns example's orders from after its training data to a gateway (optionally drifted)."""
    from skewguard.cli_examples import example_dir
    from skewguard.pipeline.cascade_file import import_from

    folder = folder or example_dir("returns")
    traffic, data = import_from(folder, "returns_traffic"), import_from(folder, "returns_data")
    drift = data.DriftKnobs(
        price_inflation=knobs["price_inflation"],
        unseen_category_share=knobs["unseen_category"],
        vocabulary_shift=knobs["vocabulary_shift"],
    )
    batch = traffic.fresh_orders(
        folder / "data", n_orders=n_orders, days=knobs["days"], seed=seed, knobs=drift
    )
    if send:
        sent = traffic.send_orders(
            knobs["url"],
            name,
            batch.orders,
            token=settings.api_token.get_secret_value() if settings.api_token else None,
        )
        click.echo(
            f"sent {n_orders} orders to {knobs['url']}: "
            + ", ".join(f"{n}× HTTP {s}" for s, n in sent.statuses.items())
        )
    if label:
        counts = traffic.append_labeled(folder / "data", batch)
        click.echo(f"labels known: the labeled data now holds {counts['orders']} orders")


@click.group("reports")
def reports() -> None:
    """Drift reports for operators: an index of the runs and the reports themselves."""


@reports.command("serve")
@click.option(
    "--dir", "folder", type=click.Path(path_type=Path), default=None, help="Default: <home>/reports."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="No authentication: keep it local.")
@click.option("--port", default=8001, show_default=True)
@click.pass_obj
def reports_serve(settings: GatewaySettings, folder: Path | None, host: str, port: int) -> None:
    """Serve the index of drift reports (newest first) and the report files over HTTP."""
    from skewguard.monitoring.reports_server import serve_reports

    root = folder or settings.home / "reports"
    click.echo(f"drift reports in {root} on http://{host}:{port}/")
    serve_reports(root, host=host, port=port)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm])\s*$")
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60}


def _age_seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    match = _AGE.match(value)
    if match is None or float(match[1]) <= 0:
        raise click.BadParameter(f"expected a positive age such as 30d, 12h or 90m, got {value!r}.")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


@click.group("log")
def log() -> None:
    """The prediction log (SKEWGUARD_LOG_URL: the home's SQLite file by default, or PostgreSQL)."""


@log.command("prune")
@click.option(
    "--older-than",
    callback=_age_seconds,
    default=None,
    help="An age: 30d, 12h or 90m. Default: SKEWGUARD_LOG_RETENTION_DAYS.",
)
@click.pass_obj
def log_prune(settings: GatewaySettings, older_than: float | None) -> None:
    """Delete the logged rows served longer ago than an age (a running gateway keeps writing)."""
    from skewguard.predictionlog.store import open_store

    age = older_than or settings.log_retention_seconds
    if age is None:
        raise click.UsageError("Give --older-than (such as 30d), or set SKEWGUARD_LOG_RETENTION_DAYS.")
    before = time.time() - age
    store = open_store(settings.prediction_log_url)
    try:
        deleted = store.prune(before)
        left = store.count()
    finally:
        store.close()
    moment = datetime.fromtimestamp(before, UTC).isoformat(timespec="seconds")
    noun = "record" if deleted == 1 else "records"
    click.echo(f"deleted {deleted} {noun} served before {moment} from {store.description}; {left} remain")


@click.command("import-champion")
@click.argument("name")
def import_champion(name: str) -> None:
    """Import cascade NAME's champion and its models from SKEWGUARD_MODEL_EXPORT (sha256 checked)."""
    from skewguard.bentos.manifest import champion

    manifest = champion(name)
    if manifest is None:
        raise ConfigError(f"No champion cascade named {name!r} was promoted.", field="name")
    click.echo(f"{manifest.tag} in the model store, with " + ", ".join(manifest.model_tags().values()))
