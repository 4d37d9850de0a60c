"""Settings: one object per deployable, read from ``SKEWGUARD_*`` variables once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skewguard.errors import ConfigError

PREFIX = "SKEWGUARD_"


class Settings(BaseModel):
    """Where skewguard keeps its state, and the knobs of the parity gate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Field(
        default=Path(".skewguard"),
        description="State folder: model store, Feast state, Prefect runs, prediction log, reports.",
    )
    parity_tolerance: float = Field(
        default=1e-6,
        gt=0,
        description="`skewguard package`: max abs probability difference between the pipeline and its "
        "graph (a cascade file sets its own under parity).",
    )
    parity_probe_seed: int = Field(
        default=0, description="Seed of the parity gate's random probes (`skewguard package` and training)."
    )
    online_store: Literal["sqlite", "redis"] = Field(default="sqlite", description="Feast online store.")
    redis_url: str = Field(
        default="127.0.0.1:6379", description="Feast Redis connection: host:port[,db=N][,password=...]."
    )
    feast_project: str = Field(
        default="skewguard",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$",
        description="Prefix of the Feast projects: a cascade's features live in <prefix>_<cascade name>.",
    )
    alias_url: str | None = Field(
        default=None,
        description="Where the champion alias lives: unset = a file in the model store; "
        "redis://host:port/db or postgresql://... for replicas on several machines.",
    )
    model_export: str | None = Field(
        default=None,
        description="Folder or fsspec URL a promotion exports the champion's models to, "
        "and replicas import the models they lack from.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read every ``SKEWGUARD_<FIELD>`` variable that is set; the rest keep defaults."""
        env = os.environ if environ is None else environ
        values = {
            name: env[PREFIX + name.upper()] for name in cls.model_fields if PREFIX + name.upper() in env
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = PREFIX + str(first["loc"][0]).upper()
            raise ConfigError(
                f"Setting {field}: {first['msg']} (got {first.get('input')!r}).", field=field
            ) from exc

    @property
    def data_dir(self) -> Path:
        """Demo and training data."""
        return self.home / "data"

    @property
    def bentoml_home(self) -> Path:
        """The BentoML home holding the model store and built Bentos."""
        return self.home / "bentoml"

    def export_environment(self) -> None:
        """Point BentoML at our model store unless the caller chose one (before importing it)."""
        os.environ.setdefault("BENTOML_HOME", str(self.bentoml_home.resolve()))
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        prefect_home = Path(os.environ.setdefault("PREFECT_HOME", str((self.home / "prefect").resolve())))
        prefect_home.mkdir(parents=True, exist_ok=True)  # its database is created there, not the folder
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # The temporary API server migrates its database on first start: slow on a busy machine.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
