"""The ``skewguard`` command line: wiring only; each command imports its package lazily."""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from skewguard.cli_ops import EXAMPLE_REQUEST
from skewguard.errors import ConfigError, SkewguardError
from skewguard.settings import Settings


def main() -> None:
    """Entry point: run the CLI and print skewguard errors as one readable line."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # third-party noise on a terminal
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        cli(standalone_mode=True)
    except SkewguardError as exc:
        click.echo(f"error ({exc.code}): {exc.message}", err=True)
        sys.exit(2)


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """skewguard: sklearn pipelines as verified ONNX graphs, served with a skew guard."""
    settings = Settings.from_env()
    settings.export_environment()
    ctx.obj = settings


@cli.command("demo-data")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder (default: <home>/data).")
@click.option("--orders", "n_orders", default=20_000, show_default=True, help="Number of orders.")
@click.option("--customers", "n_customers", default=2_000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--if-missing", is_flag=True, help="Do nothing when the data already exists.")
@click.pass_obj
def demo_data(
    settings: Settings, out: Path | None, n_orders: int, n_customers: int, seed: int, if_missing: bool
) -> None:
    """Generate the seeded 'marketplace returns' demo data (orders + customer_stats)."""
    from skewguard.pipeline.demo_data import generate_demo_data, write_demo_data

    folder = out or settings.data_dir
    if if_missing and (folder / "orders.parquet").exists():
        click.echo(f"demo data already in {folder}")
        return
    data = generate_demo_data(n_orders=n_orders, n_customers=n_customers, seed=seed)
    paths = write_demo_data(data, folder)
    paths["example request"] = _write_example_request(settings, data.orders)
    for name, path in paths.items():
        click.echo(f"wrote {name}: {path}")


@cli.command("demo-model")
@click.option("--head", type=click.Choice(["hgb", "lr", "rf"]), default="hgb", show_default=True)
@click.option("--name", default="returns-demo", show_default=True)
@click.option("--if-missing", is_flag=True, help="Do nothing when a model of that name is stored.")
@click.pass_obj
def demo_model(settings: Settings, head: str, name: str, if_missing: bool) -> None:
    """Train the demo multimodal 'returned' model on the demo data and package it."""
    from skewguard.bentos.store import list_models
    from skewguard.pipeline.demo_data import load_demo_data
    from skewguard.pipeline.returns_model import train_and_package

    if if_missing and list_models(name):
        click.echo(f"model {list_models(name)[0]} already in the store")
        return
    tag = train_and_package(load_demo_data(settings.data_dir), head=head, name=name)  # type: ignore[arg-type]
    click.echo(tag)


@cli.command("train")
@click.option("--name", default="returns", show_default=True, help="Cascade name.")
@click.option("--head", type=click.Choice(["hgb", "lr", "rf"]), default="hgb", show_default=True)
@click.option("--threshold", default="0.5", show_default=True, help="Routing threshold, or 'max_f1'.")
@click.option(
    "--orders", "n_orders", default=20_000, show_default=True, help="Demo orders if data is missing."
)
@click.option("--seed", default=0, show_default=True)
@click.option("--if-missing", is_flag=True, help="Do nothing when the cascade has a champion.")
@click.option(
    "--no-image",
    "no_image",
    is_flag=True,
    help="Leave the photo out: a tabular+text cascade (no image input).",
)
def train(
    name: str, head: str, threshold: str, n_orders: int, seed: int, if_missing: bool, no_image: bool
) -> None:
    """Run the train_cascade Prefect flow and print the evaluation figures."""
    if if_missing:
        from skewguard.bentos.manifest import champion_tag

        if (tag := champion_tag(name)) is not None:
            click.echo(f"cascade {name} already has a champion: {tag}")
            return
    from skewguard.pipeline.flows import train_cascade

    choice: Any = threshold if threshold == "max_f1" else float(threshold)
    result = train_cascade(  # type: ignore[call-overload]
        name, n_orders=n_orders, seed=seed, head=head, threshold=choice, image=not no_image
    )
    click.echo(format_figures(result))


def format_figures(result: dict[str, Any]) -> str:
    """The evaluation table `skewguard train` ends with."""
    figures = result["figures"]
    lines = [
        f"cascade {result['manifest']} ({result['status']}); models: "
        + ", ".join(f"{role}={tag}" for role, tag in result["models"].items()),
        f"routing threshold {figures['threshold']['value']:g} ({figures['threshold']['reason']})",
        "",
        f"{'held-out slice':<30}{'ROC AUC':>9}{'log loss':>10}{'accuracy':>10}{'rows':>8}",
    ]
    for system in ("cascade", "monolithic", "true_label_cascade"):
        for part, scores in [("overall", figures[system]["overall"]), *figures[system]["branches"].items()]:
            label = f"{system} {part}" if part != "overall" else system
            lines.append(
                f"{label:<30}{_fmt(scores['roc_auc']):>9}{_fmt(scores['log_loss']):>10}"
                f"{_fmt(scores['accuracy']):>10}{scores['n_rows']:>8}"
            )
    cached = sorted(task for task, state in result["task_states"].items() if state == "Cached")
    lines.append(f"cached tasks: {', '.join(cached) or 'none'}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@cli.command("package")
@click.option(
    "--pipeline",
    "pipeline_file",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Pickled fitted sklearn pipeline (loaded here, at build time only).",
)
@click.option(
    "--sample",
    "sample_file",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Held-out rows (.parquet or .csv); image columns as encoded bytes.",
)
@click.option("--name", required=True, help="Model name in the store.")
@click.option("--target", default=None, help="Label column in the sample, for metrics.")
@click.option("--tolerance", type=float, default=None, help="Max abs probability difference [1e-4].")
@click.pass_obj
def package(
    settings: Settings,
    pipeline_file: Path,
    sample_file: Path,
    name: str,
    target: str | None,
    tolerance: float | None,
) -> None:
    """Convert a fitted pipeline to ONNX, prove parity, store it; print a per-step report, then the tag."""
    from skewguard.bentos.package import package_model
    from skewguard.bentos.report import render_outcome
    from skewguard.errors import ConversionError, ParityError

    with pipeline_file.open("rb") as handle:
        fitted = pickle.load(handle)  # noqa: S301 - the user's own file, at build time, never in serving
    X = _read_sample(sample_file)
    y = None
    if target is not None:
        if target not in X.columns:
            raise ConfigError(f"--target {target!r} is not a column of {sample_file}.", field="target")
        y = X.pop(target).to_numpy()
    try:
        tag = package_model(
            fitted, X, name=name, y_sample=y, tolerance=tolerance or settings.parity_tolerance
        )
    except (ConversionError, ParityError) as refused:
        click.echo(render_outcome(name, fitted, error=refused), err=True)
        raise
    click.echo(render_outcome(name, fitted, tag=tag))
    click.echo(tag)


@cli.command("models")
@click.argument("name", required=False)
def models(name: str | None) -> None:
    """List packaged models (newest first) with their parity figures."""
    from skewguard.bentos.store import list_models, load_model

    for tag in list_models(name):
        model = load_model(tag)
        checked = model.parity["n_heldout"] + model.parity["n_probes"]
        click.echo(
            f"{tag}  fields={len(model.spec.fields)}  parity max diff={model.parity['max_abs_diff']:.2g} "
            f"over {checked} rows  metrics={json.dumps(model.metrics)}"
        )


def _read_sample(path: Path) -> Any:
    import pandas as pd

    from skewguard.bentos.images import decode_image

    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    for column in frame.columns:
        first = next((v for v in frame[column] if v is not None), None)
        if isinstance(first, bytes | bytearray):
            frame[column] = [decode_image(bytes(v), field=column) for v in frame[column]]
    return frame


@cli.group("bento")
def bento() -> None:
    """Build and serve one packaged model as a BentoML service."""


@bento.command("build")
@click.option("--model", "tag", default="returns-demo:latest", show_default=True)
def bento_build(tag: str) -> None:
    """Build a Bento for a packaged model; print its tag."""
    from skewguard.bentos.bento import build_bento

    click.echo(build_bento(tag))


@bento.command("serve")
@click.option("--model", "tag", default="returns-demo:latest", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def bento_serve(tag: str, host: str, port: int) -> None:
    """Build the model's Bento and serve it with `bentoml serve` (POST /predict)."""

    from skewguard.bentos.bento import build_bento, serve_command

    command = serve_command(build_bento(tag), port, host=host)
    click.echo(f"serving {tag} on http://{host}:{port}  ({' '.join(command)})")
    os.execvp(command[0], command)


@cli.group("features")
def features() -> None:
    """The Feast feature store: register the definitions, fill the online store."""


@features.command("apply")
@click.pass_obj
def features_apply(settings: Settings) -> None:
    """Register feature_repo/definitions.py in the configured store."""
    from skewguard.pipeline.features import FeastConfig, apply_features

    for name in apply_features(FeastConfig.from_settings(settings)):
        click.echo(f"applied {name}")


@features.command("materialize")
@click.option(
    "--end",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="As of (UTC). Default: just after the newest snapshot in the data.",
)
@click.option(
    "--start",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Default: end minus the feature view's TTL.",
)
@click.pass_obj
def features_materialize(settings: Settings, end: datetime | None, start: datetime | None) -> None:
    """Write each customer's latest snapshot in [start, end] to the online store."""
    from skewguard.pipeline.features import FeastConfig, latest_event_time, materialize_features

    config = FeastConfig.from_settings(settings)
    done = materialize_features(config, end=end or latest_event_time(config), start=start)
    click.echo(
        f"materialized {done.feature_view} {done.start:%Y-%m-%d %H:%M} .. {done.end:%Y-%m-%d %H:%M} "
        f"into {done.online_store}"
    )


def _write_example_request(settings: Settings, orders: Any) -> Path:
    """A real request body from the demo data, for the curl example `serve` prints."""
    from skewguard.pipeline.demo_data import request_row

    row = request_row(orders.iloc[-1])
    path = settings.home / EXAMPLE_REQUEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": [row]}))
    return path


@cli.command("monitor")
@click.argument("name", default="returns")
@click.option("--since", type=float, default=None, help="Only rows logged after this epoch second.")
@click.option("--last", type=int, default=None, help="Only the newest N logged rows.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Default: a new <home>/reports/<UTC time>."
)
@click.option("--min-rows", default=500, show_default=True, help="Fewer served rows: no verdict.")
@click.option("--watch", multiple=True, help="Columns whose drift alone makes a verdict (default: all).")
@click.option(
    "--skew/--no-skew",
    default=True,
    show_default=True,
    help="Compare served online features with Feast's point-in-time offline values "
    "(--no-skew when Feast is not set up).",
)
@click.option("--skew-threshold", default=0.01, show_default=True, help="Mismatching share that is skew.")
@click.option(
    "--skew-at", default=None, help="Request field with the time to compare at (default: serving time)."
)
def monitor(
    name: str,
    since: float | None,
    last: int | None,
    out: Path | None,
    min_rows: int,
    watch: tuple[str, ...],
    skew: bool,
    skew_threshold: float,
    skew_at: str | None,
) -> None:
    """Compare served traffic with the champion's training data (Evidently); exit 1 on drift or skew."""
    import pandas as pd

    from skewguard.bentos.feature_store import FeastConfig
    from skewguard.bentos.manifest import champion
    from skewguard.gateway.predlog import read_records
    from skewguard.gateway.settings import GatewaySettings
    from skewguard.monitoring.job import check_drift, training_set_of
    from skewguard.monitoring.skew import FeastOfflineFeatures, SkewCheck, SkewPolicy
    from skewguard.monitoring.verdict import DriftPolicy

    settings = GatewaySettings.from_env()
    manifest = champion(name)
    if manifest is None:
        raise ConfigError(f"No champion cascade named {name!r}; run `skewguard train`.", field="name")
    records = read_records(settings.prediction_log_url, since=since)
    if last is not None:
        records = records[-last:]
    training = pd.read_parquet(training_set_of(manifest, settings.home))
    policy = DriftPolicy(min_rows=min_rows, watched=frozenset(watch) if watch else None)
    offline = FeastOfflineFeatures(FeastConfig.from_settings(settings))
    check = SkewCheck(offline, SkewPolicy(max_mismatch_rate=skew_threshold), skew_at) if skew else None
    result = check_drift(
        records, training, manifest, out or _new_run_folder(settings.home), policy=policy, skew=check
    )
    verdict = result.summary.verdict
    click.echo(f"{len(records)} served rows of {name}; drift: {verdict.drift}")
    for reason in verdict.reasons:
        click.echo(f"  - {reason}")
    if result.skew is not None:
        click.echo(f"feature skew: {', '.join(result.skew.skewed_features) or 'none'}")
    click.echo(f"report: {result.html}\nsummary: {result.summary_json}\nmetrics: {result.metrics}")
    if verdict.drift:
        sys.exit(1)


def _new_run_folder(home: Path) -> Path:
    """A folder per monitor run, so `skewguard reports serve` lists the history."""
    from datetime import UTC

    return home / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _register_operator_commands() -> None:
    from skewguard.cli_ops import demo_traffic, log, reports, retrain, serve

    for command in (serve, retrain, demo_traffic, reports, log):
        cli.add_command(command)


_register_operator_commands()
