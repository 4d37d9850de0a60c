"""The ``skewguard`` command line: the group, and the commands that turn pipelines into stored models.

Wiring only: each command imports its package lazily, so ``skewguard --help`` stays quick.
The settings are read from ``SKEWGUARD_*`` once, here, and handed to every command.

    skewguard schema | train -f | package | models | bento build|serve | features apply|materialize -f
    skewguard cascade list|show|compose|promote|rollback|shadow|canary|detach  (skewguard.cli_cascades)
    skewguard serve | monitor | compare | retrain | demo-traffic | reports serve | log prune
                                                              (skewguard.cli_ops)
    skewguard demo-data | examples list|copy                  (skewguard.cli_examples)
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from skewguard.cli_options import CASCADE_FILE, quiet_third_parties
from skewguard.errors import ConfigError, SkewguardError
from skewguard.settings import Settings


def main() -> None:
    """Entry point: run the CLI and print skewguard errors as one readable line."""
    try:
        cli(standalone_mode=True)
    except SkewguardError as exc:
        click.echo(f"error ({exc.code}): {exc.message}", err=True)
        sys.exit(2)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Show the libraries' own logs and warnings.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """skewguard: sklearn pipelines as verified ONNX graphs, served as cascades with a skew guard."""
    ctx.meta["verbose"] = verbose
    if not verbose:
        quiet_third_parties()
    from skewguard.bentos.aliases import configure
    from skewguard.gateway.settings import GatewaySettings  # the deployment's settings: a superset

    settings = GatewaySettings.from_env()
    settings.export_environment()
    configure(settings.alias_url, settings.model_export)  # where the champion alias and exports live
    ctx.obj = settings


@cli.command("schema")
def schema() -> None:
    """Print the JSON Schema of the cascade file (for editors and CI)."""
    from skewguard.pipeline.cascade_file import schema as cascade_schema

    click.echo(json.dumps(cascade_schema(), indent=2))


@cli.command("train")
@CASCADE_FILE
@click.option("--if-missing", is_flag=True, help="Do nothing when the cascade already has a champion.")
@click.pass_obj
def train(settings: Settings, file: Path, if_missing: bool) -> None:
    """Train the cascade a cascade file declares (the train_cascade Prefect flow); print its figures."""
    from skewguard.bentos.manifest import champion_tag
    from skewguard.pipeline.cascade_file import load_cascade_file
    from skewguard.pipeline.flows import train_cascade

    if not click.get_current_context().meta.get("verbose"):
        quiet_third_parties(feast=True)
    name = load_cascade_file(file).spec.name
    if if_missing and (tag := champion_tag(name)) is not None:
        click.echo(f"cascade {name} already has a champion: {tag}")
        return
    click.echo(f"training cascade {name} from {file} (the first run takes a few minutes; -v shows each step)")
    result = train_cascade(file, settings=settings)
    click.echo(format_figures(result))


def format_figures(result: dict[str, Any]) -> str:
    """The evaluation table `skewguard train` ends with: every system, overall and per branch."""
    figures = result["figures"]
    lines = [
        f"cascade {result['manifest']} ({result['status']}); models: "
        + ", ".join(f"{role}={tag}" for role, tag in result["models"].items())
    ]
    if "threshold" in figures and figures["threshold"]["value"] is not None:
        lines.append(
            f"routing threshold {figures['threshold']['value']:.4g} ({figures['threshold']['reason']})"
        )
    metrics = _metric_names(figures["cascade"])
    lines += ["", f"{'held-out slice':<32}" + "".join(f"{m:>10}" for m in metrics) + f"{'rows':>8}"]
    for system in ("cascade", "monolithic", "true_label_cascade"):
        if system not in figures:
            continue
        scopes = [("", figures[system]["overall"]), *figures[system]["branches"].items()]
        for part, scores in scopes:
            if scores is None:
                continue
            label = f"{system} {part}".strip()
            values = "".join(f"{_fmt(scores.get(m)):>10}" for m in metrics)
            lines.append(f"{label:<32}{values}{scores.get('n_rows', 0):>8}")
    cached = sorted(task for task, state in result["task_states"].items() if state == "Cached")
    lines.append(f"cached tasks: {', '.join(cached) or 'none'}")
    return "\n".join(lines)


def _metric_names(system: dict[str, Any]) -> list[str]:
    scores = system["overall"] or next(iter(system["branches"].values()))
    order = ("roc_auc", "log_loss", "accuracy", "mae", "rmse", "r2")
    return [name for name in order if name in scores]


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
@click.option(
    "--tolerance",
    type=float,
    default=None,
    help="Max abs probability difference [SKEWGUARD_PARITY_TOLERANCE: 1e-6].",
)
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
            fitted,
            X,
            name=name,
            y_sample=y,
            tolerance=tolerance or settings.parity_tolerance,
            seed=settings.parity_probe_seed,
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
@click.option("--model", "tag", required=True, help="A packaged model's tag (name:version or name:latest).")
def bento_build(tag: str) -> None:
    """Build a Bento for a packaged model; print its tag."""
    from skewguard.bentos.bento import build_bento

    click.echo(build_bento(tag))


@bento.command("serve")
@click.option("--model", "tag", required=True, help="A packaged model's tag (name:version or name:latest).")
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
    """A cascade's Feast features: register its repository, fill the online store."""


@features.command("apply")
@CASCADE_FILE
@click.pass_obj
def features_apply(settings: Settings, file: Path) -> None:
    """Register the cascade's Feast repository in its project."""
    from skewguard.featurestore.repository import apply_repository

    config = _feast_config(settings, file)
    for name in apply_repository(config):
        click.echo(f"applied {name}")
    click.echo(f"feature project {config.project} ready ({config.describe()})")


@features.command("materialize")
@CASCADE_FILE
@click.option(
    "--end",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="As of (UTC). Default: just after the newest snapshot in the views' sources.",
)
@click.option(
    "--start",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Default: end minus each feature view's TTL.",
)
@click.pass_obj
def features_materialize(
    settings: Settings, file: Path, end: datetime | None, start: datetime | None
) -> None:
    """Write each entity's latest snapshot in [start, end] of the cascade's views to the online store."""
    from skewguard.featurestore.repository import latest_event_time, materialize, resolve_features
    from skewguard.pipeline.cascade_file import load_cascade_file

    config = _feast_config(settings, file)
    section = load_cascade_file(file).spec.features
    if section is None:
        raise ConfigError(f"{file} has no features section: nothing to materialize.", field="features")
    selection = resolve_features(
        config, entity_key=section.entity_key, service=section.service, refs=section.refs
    )
    views = sorted({ref.split(":")[0] for ref in selection.refs.values()})
    click.echo(f"materializing {', '.join(views)} into {config.describe()} ...")
    done = materialize(config, views, end=end or latest_event_time(config, views), start=start)
    click.echo(
        f"materialized {', '.join(done.views)} {done.start:%Y-%m-%d %H:%M} .. {done.end:%Y-%m-%d %H:%M} "
        f"into {done.online_store}"
    )


def _feast_config(settings: Settings, file: Path) -> Any:
    from skewguard.featurestore.connection import FeastConfig, project_name
    from skewguard.pipeline.cascade_file import load_cascade_file

    loaded = load_cascade_file(file)
    if loaded.spec.features is None:
        raise loaded.error("features", "this cascade reads no online features.")
    repo = loaded.resolve(loaded.spec.features.repository)
    return FeastConfig.for_project(settings, project_name(settings, loaded.spec.name), repo)


def _register_commands() -> None:
    from skewguard.cli_cascades import cascade
    from skewguard.cli_examples import demo_data, examples
    from skewguard.cli_ops import (
        compare,
        demo_traffic,
        import_champion,
        log,
        monitor,
        reports,
        retrain,
        serve,
    )

    for command in (
        cascade,
        demo_data,
        examples,
        serve,
        monitor,
        compare,
        retrain,
        demo_traffic,
        reports,
        log,
    ):
        cli.add_command(command)
    for command in (import_champion,):
        cli.add_command(command)


_register_commands()
