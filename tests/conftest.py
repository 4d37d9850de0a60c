"""Session-wide isolation: every test run gets its own BentoML and skewguard homes."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

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
