"""Session-wide isolation: every test run gets its own BentoML and skewguard homes."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path[:0] = [str(EXAMPLES / "returns"), str(EXAMPLES / "bike-hires")]  # their modules, as a user's
_HOME = Path(tempfile.mkdtemp(prefix="skewguard-tests-"))
os.environ["BENTOML_HOME"] = str(_HOME / "bentoml")
os.environ["SKEWGUARD_HOME"] = str(_HOME / "skewguard")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.setdefault("LANG", "C.UTF-8")


def package_cascade_models(demo: object, prefix: str, *, n_sample: int = 100) -> dict[str, str]:
    """A router and two specialists on the demo data, packaged for real (linear heads, fast)."""
    from returns_models import (
        ENTITY_KEY,
        FEATURE_VIEW,
        ONLINE,
        feature_columns,
        make_pipeline,
        split_by_time,
        training_frame,
    )

    from skewguard.bentos.package import package_model

    train, test = split_by_time(training_frame(demo))  # type: ignore[arg-type]
    columns, refs = feature_columns(), {feature: f"{FEATURE_VIEW}:{feature}" for feature in ONLINE}
    parts = {
        "router": (train, "is_reseller"),
        "reseller": (train[train["is_reseller"] == 1], "returned"),
        "retail": (train[train["is_reseller"] == 0], "returned"),
    }
    tags = {}
    for role, (rows, target) in parts.items():
        pipeline = make_pipeline("lr").fit(rows[columns], rows[target])
        tags[role] = package_model(
            pipeline,
            test[columns].iloc[:n_sample],
            name=f"{prefix}-{role}",
            X_profile=rows[columns],
            entity_key=ENTITY_KEY,
            online_features=refs,
        )
    return tags


RETURNS_ROUTES = {"1": "reseller", "0": "retail"}
"""The returns example's router classes → branches (``is_reseller``)."""
RETURNS_FEATURES = {  # what compose_manifest records for a returns cascade read from Feast
    "entity_key_type": "int64",
    "feature_ttl_seconds": dict.fromkeys(
        ("orders_30d", "return_rate_90d", "account_age_days"), 30 * 86_400.0
    ),
    "event_time_field": "order_ts",
}


def returns_project(folder: Path, demo: object) -> Path:
    """A copy of the returns example in ``folder`` (as a user's project), with ``demo`` as its data."""
    import shutil

    from returns_data import write_demo_data

    shutil.copytree(
        EXAMPLES / "returns", folder, ignore=shutil.ignore_patterns("data", "__pycache__"), dirs_exist_ok=True
    )
    write_demo_data(demo, folder / "data")  # type: ignore[arg-type]
    return folder


def write_cascade_file(project: Path, filename: str = "cascade.yaml", **changes: object) -> Path:
    """The project's cascade file, top-level keys replaced (``router=None`` drops one), as ``filename``."""
    import yaml

    spec = yaml.safe_load((project / "cascade.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path = project / filename
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def materialize_returns_features(settings: object, project: str, folder: Path) -> object:
    """The returns project's Feast repository applied to ``project`` and materialized as of its data's end."""
    from skewguard.featurestore.connection import FeastConfig
    from skewguard.featurestore.repository import apply_repository, latest_event_time, materialize

    config = FeastConfig.for_project(settings, project, folder / "feature_repo")  # type: ignore[arg-type]
    apply_repository(config)
    materialize(config, ["customer_stats"], end=latest_event_time(config, ["customer_stats"]))
    return config


def pytest_sessionfinish() -> None:
    """Stop Prefect's temporary API server while the session's output streams are still open.

    Flows run in the test process start one; left to Prefect's own exit hook, it is stopped
    after pytest has closed the streams its log handler writes to, and every run ended with
    a "Logging error ... I/O operation on closed file" traceback. The flows' queued logs are
    sent first: stopped before them, the exit waited ~70 s on the log worker's retries.
    """
    server = sys.modules.get("prefect.server.api.server")
    if server is None:  # no flow ran in this process
        return
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    for instance in list(server.SubprocessASGIServer._instances.values()):
        instance.stop()
