"""Options several ``skewguard`` commands share (kept apart so command modules import no other)."""

from __future__ import annotations

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
