"""What several ``skewguard`` commands share: options, and keeping third-party noise off the terminal.

Kept apart so that command modules import no other."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import click

CASCADE_FILE = click.option(
    "-f",
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The cascade file (YAML; `skewguard schema` prints its JSON Schema).",
)
OPTIONAL_CASCADE_FILE = click.option(
    "-f",
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The cascade file (instead of NAME).",
)


def quiet_third_parties(*, feast: bool = False) -> None:
    """Keep the libraries' deprecation warnings, INFO logs and colours out of a user's terminal.

    ``feast``: import Feast first. Its modules put their own warning filters in front of
    everyone's when imported (``warnings.simplefilter("once", DeprecationWarning)``), so a
    command that will use Feast imports it before setting ours.
    """
    if feast:
        import feast as _feast  # noqa: F401
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="feast")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_COLORS", "false")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # Prefect's server process too
    logging.getLogger("feast").setLevel(logging.WARNING)
