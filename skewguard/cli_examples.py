"""The shipped examples: list them, copy one to a folder of your own, generate an example's data.

Each example is a folder — a cascade file, a module of pipeline factories, a Feast
repository and a ``*_data.py`` module whose ``write_example_data(folder, rows=, seed=)``
writes its seeded data into ``data/`` — shipped with the package (``skewguard/examples``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from skewguard.errors import ConfigError
from skewguard.settings import Settings

EXAMPLES = Path(__file__).resolve().parent / "examples"
REQUESTS_DIR = "requests"
"""In the home: a real request body per cascade, for the curl that `serve` prints."""


def example_dir(name: str) -> Path:
    """The shipped example ``name``'s folder."""
    folder = EXAMPLES / name
    if not (folder / "cascade.yaml").is_file():
        known = ", ".join(sorted(p.name for p in EXAMPLES.iterdir() if (p / "cascade.yaml").is_file()))
        raise ConfigError(f"No example named {name!r}; the examples are {known}.", field="example")
    return folder


def _data_module(folder: Path) -> Any:
    from skewguard.pipeline.cascade_file import import_from

    found = sorted(folder.glob("*_data.py"))
    if len(found) != 1:
        raise ConfigError(f"The example folder {folder} has no single *_data.py module.", field="example")
    return import_from(folder, found[0].stem)


def write_data(folder: Path, rows: int | None, seed: int) -> dict[str, Path]:
    """Generate the example at ``folder``'s data into ``folder/data`` (``rows``: its default size)."""
    size = {} if rows is None else {"rows": rows}
    return dict(_data_module(folder).write_example_data(folder / "data", seed=seed, **size))


@click.command("demo-data")
@click.option("--example", "name", default="returns", show_default=True, help="Which example's data.")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The example's folder (default: the shipped one; see `skewguard examples copy`).",
)
@click.option("--rows", type=int, default=None, help="Rows to generate (default: the example's size).")
@click.option("--seed", default=0, show_default=True)
@click.option("--if-missing", is_flag=True, help="Do nothing when the data already exists.")
@click.pass_obj
def demo_data(
    settings: Settings, name: str, folder: Path | None, rows: int | None, seed: int, if_missing: bool
) -> None:
    """Generate an example's seeded data into its data/ folder, and a request body to try."""
    folder = folder or example_dir(name)
    if if_missing and (folder / "data").is_dir() and any((folder / "data").glob("*.parquet")):
        click.echo(f"example data already in {folder / 'data'}")
    else:
        click.echo(f"generating the {name} example's data in {folder / 'data'} ...")
        for label, path in write_data(folder, rows, seed).items():
            click.echo(f"wrote {label}: {path}")
    request = settings.home / REQUESTS_DIR / f"{name}.json"
    request.parent.mkdir(parents=True, exist_ok=True)
    request.write_text(json.dumps(_data_module(folder).example_request(folder / "data")))
    click.echo(f"wrote a request to try: {request}")


@click.group("examples")
def examples() -> None:
    """The examples shipped with skewguard: one folder each, a cascade file at its root."""


@examples.command("list")
def examples_list() -> None:
    """List the examples and where their cascade files are."""
    for folder in sorted(p for p in EXAMPLES.iterdir() if (p / "cascade.yaml").is_file()):
        click.echo(f"{folder.name:<14}{folder / 'cascade.yaml'}")


@examples.command("copy")
@click.argument("name")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--rows", type=int, default=None, help="Rows of data to generate (default: the example's size)."
)
def examples_copy(name: str, dest: Path, rows: int | None) -> None:
    """Copy an example to DEST (a project of your own to edit) and generate its data there."""
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} exists and is not empty; choose a new folder.", field="dest")
    shutil.copytree(
        example_dir(name), dest, ignore=shutil.ignore_patterns("data", "__pycache__"), dirs_exist_ok=True
    )
    write_data(dest, rows, 0)
    click.echo(
        f"copied the {name} example to {dest}; train it with: skewguard train -f {dest / 'cascade.yaml'}"
    )
