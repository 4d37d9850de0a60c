"""Podman, as the container tests drive it: build the image with the host's pip setup, run it.

The build must reach packages the way the host's pip does, without any index named in the
project: :func:`pip_build_volumes` writes the host's effective pip configuration (files and
``PIP_*`` variables, as ``pip config list`` reports them) into one ``pip.conf`` and mounts
it at ``/etc/pip.conf`` for the build's ``RUN`` steps, together with every local file or
folder it points at (CA bundle, constraints, file indexes, find-links) — read-only and at
the same paths, so the configuration means the same thing inside.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

PROJECT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"
BASE_IMAGE_SCRIPT = PROJECT / ".ci" / "base-image"
PACKAGES = (
    "skewguard",
    "bentos",
    "featurestore",
    "predictionlog",
    "gateway",
    "monitoring",
    "pipeline",
    "examples",
)
"""The folders the Dockerfile copies (``skewguard/`` links to the others)."""
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
"""Explicit, because podman's default limits exceed what some sandboxes (CI's) let runc set."""


def podman() -> str | None:
    """The podman executable, or None when it is not installed."""
    return shutil.which("podman")


CONTAINERS_CONF = PROJECT / ".ci" / "containers.conf"
"""runc and the default ulimits this machine allows, for what takes no ``--ulimit`` (``kube play``)."""


def run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``podman <args>``, output captured; a failure shows podman's own words."""
    env = {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}  # .ci/run sets the same
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def ensure_base_image() -> None:
    """Build the local ``python:3.11-slim`` with .ci/base-image unless podman already has one."""
    if run("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        subprocess.run(["bash", str(BASE_IMAGE_SCRIPT), BASE_IMAGE], check=True, timeout=1800)


def host_pip_config() -> dict[str, dict[str, str]]:
    """The host pip's effective settings by section (env variables folded into ``global``)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    sections: dict[str, dict[str, str]] = {}
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if not sep or not name:
            continue
        section = "global" if section in {":env:", ""} else section
        sections.setdefault(section, {})[name] = value.strip().strip("'\"")
    return sections


def _local_paths(value: str) -> list[Path]:
    """The existing local paths in a setting's value: plain paths and ``file://`` URLs.

    A ``file://`` index links to its files relatively (``../../files/…``), so its parent
    folder is what must be visible.
    """
    paths = []
    for token in value.split():
        if token.startswith("file://"):
            path = Path(urlparse(token).path)
            paths.append(path.parent if path.name == "simple" else path)
        elif token.startswith("/"):
            paths.append(Path(token))
    return [path for path in paths if path.exists()]


def pip_build_volumes(folder: Path) -> list[str]:
    """``podman build`` options giving its ``RUN`` steps the host's pip configuration."""
    sections = host_pip_config()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(sections)
    conf = folder / "pip.conf"
    with conf.open("w") as handle:
        parser.write(handle)
    mounts = {str(conf): "/etc/pip.conf"}
    for values in sections.values():
        for value in values.values():
            mounts.update({str(path): str(path) for path in _local_paths(value)})
    return [option for src, dst in mounts.items() for option in ("--volume", f"{src}:{dst}:ro")]


def build_image(tag: str, folder: Path, *, target: str = "gateway", context: Path = PROJECT) -> float:
    """Build the Dockerfile in ``context`` as ``tag``; the seconds it took. The log goes to ``folder``."""
    started = time.monotonic()
    log = folder / f"build-{target}.log"
    command = [
        "podman", "build", "--format", "docker", "--network", "host", "--layers",
        "--target", target, "--tag", tag, *ULIMITS, *pip_build_volumes(folder), str(context),
    ]  # fmt: skip
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"podman build exited {done.returncode}:\n{log.read_text()[-6000:]}")
    return time.monotonic() - started


def baked_context(folder: Path, state: Path) -> Path:
    """A copy of the build context with ``state`` as its ``.skewguard/``, for ``--target baked``.

    The whole state goes in (demo data, logs and all): what reaches the image is up to
    ``.dockerignore``, as it is for an operator baking the project's own ``.skewguard/``.
    """
    context = folder / "context"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        context.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, context / name)
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, context / package, ignore=skip)
    shutil.copytree(state, context / ".skewguard")
    return context
