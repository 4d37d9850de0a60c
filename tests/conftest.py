"""Session-wide isolation: every test run gets its own BentoML and skewguard homes."""

from __future__ import annotations

import os
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
