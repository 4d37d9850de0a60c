"""Operator commands: serve, retrain, demo traffic, reports index, the log's retention, the
champion's import from the model export (``skewguard.cli`` registers them)."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from skewguard.entry import run_optimized
from skewguard.errors import ConfigError
from skewguard.settings import Settings

EXAMPLE_REQUEST = "example-request.json"
"""In the home: a real request body from the demo data, for the curl example `serve` prints."""


@click.command("serve")
@click.option("--host", default=None, help="Default: SKEWGUARD_HOST or 127.0.0.1.")
@click.option("--port", type=int, default=None, help="Default: SKEWGUARD_PORT or 8000.")
def serve(host: str | None, port: int | None) -> None:
    """Serve the champion cascades through the gateway (POST /v1/cascades/{name}/predict)."""
    run_optimized()  # `python -m skewguard serve` comes here without -O
    from skewguard.gateway.server import serve as run_gateway
    from skewguard.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env()
    settings = settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    base = f"http://{_reachable(settings.host)}:{settings.port}"
    click.echo(f"gateway on {base}  (docs: {base}/docs)")
    example = settings.home / EXAMPLE_REQUEST
    if example.exists():
        where, body = _body_path(example)
        click.echo(
            f"try{where}:  curl -s {base}/v1/cascades/{settings.cascade_names[0]}/predict "
            f"-H 'content-type: application/json' -d @{body}"
        )
    run_gateway(settings)


def _reachable(host: str) -> str:
    """The address a client on this machine uses for a gateway bound to ``host``."""
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host


def _body_path(example: Path) -> tuple[str, Path]:
    """How to name the example body: relative to where serve started, else to the home folder.

    In a container the home is a path inside it (the operator mounted their own folder
    there), which means nothing on the operator's side: name the file in the home instead.
    """
    try:
        return "", example.resolve().relative_to(Path.cwd())
    except ValueError:
        return " (in your skewguard home folder)", Path(example.name)


@click.command("retrain")
@click.argument("name", default="returns")
@click.option("--last", type=int, default=None, help="Monitor the newest N logged rows (default: all).")
@click.option("--min-rows", default=500, show_default=True, help="Fewer served rows: no verdict, no retrain.")
@click.option("--watch", multiple=True, help="Columns whose drift alone makes a verdict (default: all).")
@click.option("--skew-at", default=None, help="Passed to the monitor: request field with the feature time.")
@click.option("--margin", default=0.005, show_default=True, help="How much better the candidate must be.")
@click.option(
    "--metric", type=click.Choice(["roc_auc", "log_loss", "accuracy"]), default="roc_auc", show_default=True
)
@click.option("--force", is_flag=True, help="Train a candidate even without drift (the gate still applies).")
@click.option("--gateway-url", default=None, help="Gateway to reload after a promotion (admin endpoint).")
@click.option("--schedule", default=None, help="A cron line: serve the flow as a Prefect deployment on it.")
def retrain(
    name: str,
    last: int | None,
    min_rows: int,
    watch: tuple[str, ...],
    skew_at: str | None,
    margin: float,
    metric: str,
    force: bool,
    gateway_url: str | None,
    schedule: str | None,
) -> None:
    """Run the retrain_if_drifted flow: monitor, retrain on drift, promote only a better candidate."""
    from skewguard.pipeline.retrain import retrain_if_drifted

    parameters: dict[str, Any] = {
        "name": name,
        "last": last,
        "min_rows": min_rows,
        "watch": list(watch),
        "monitor_options": ["--skew-at", skew_at] if skew_at else [],
        "margin": margin,
        "metric": metric,
        "force": force,
        "gateway_url": gateway_url,
    }
    if schedule:
        from prefect import serve as serve_deployments

        from skewguard.pipeline.retrain import scheduled_deployment

        deployment = scheduled_deployment(schedule, parameters)
        click.echo(f"serving {deployment.name} on the schedule {schedule!r} (Ctrl-C stops)")
        serve_deployments(deployment)
        return
    decision = retrain_if_drifted(**parameters)
    click.echo(f"decision: {decision['decision']}")
    for reason in decision.get("reasons", []):
        click.echo(f"  - {reason}")


@click.command("demo-traffic")
@click.argument("name", default="returns")
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
    settings: Settings,
    name: str,
    url: str,
    n_orders: int,
    days: int,
    seed: int,
    price_inflation: float,
    unseen_category: float,
    vocabulary_shift: float,
    send: bool,
    label: bool,
) -> None:
    """Send demo orders from after the training data to the gateway (optionally drifted)."""
    from skewguard.pipeline.demo_data import DriftKnobs
    from skewguard.pipeline.demo_traffic import append_labeled, fresh_orders, send_orders

    knobs = DriftKnobs(
        price_inflation=price_inflation,
        unseen_category_share=unseen_category,
        vocabulary_shift=vocabulary_shift,
    )
    batch = fresh_orders(settings.data_dir, n_orders=n_orders, days=days, seed=seed, knobs=knobs)
    if send:
        sent = send_orders(url, name, batch.orders, token=os.environ.get("SKEWGUARD_API_TOKEN"))
        click.echo(
            f"sent {n_orders} orders to {url}: "
            + ", ".join(f"{n}× HTTP {s}" for s, n in sent.statuses.items())
        )
    if label:
        counts = append_labeled(settings.data_dir, batch)
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
def reports_serve(settings: Settings, folder: Path | None, host: str, port: int) -> None:
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
def log_prune(older_than: float | None) -> None:
    """Delete the logged rows served longer ago than an age (a running gateway keeps writing)."""
    from skewguard.gateway.predlog_sql import open_store
    from skewguard.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env()
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
@click.argument("name", default="returns")
def import_champion(name: str) -> None:
    """Import cascade NAME's champion and its models from SKEWGUARD_MODEL_EXPORT (sha256 checked)."""
    from skewguard.bentos.manifest import champion

    manifest = champion(name)
    if manifest is None:
        raise ConfigError(f"No champion cascade named {name!r} was promoted.", field="name")
    click.echo(f"{manifest.tag} in the model store, with " + ", ".join(manifest.model_tags().values()))
