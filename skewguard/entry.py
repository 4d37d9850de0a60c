"""The ``skewguard`` program: ``serve`` starts again under ``python -O`` before the CLI is imported.

Feast checks the types of its own API with typeguard, which re-parses and compiles its
functions when Feast is imported: ~2.5 of the gateway's ~5 s from start to ready on this kind
of machine. ``-O`` makes typeguard's decorator a no-op. The process id stays the same (exec),
so signals sent to it still reach the gateway. ``make install`` and the Dockerfile compile the
optimized bytecode. Deciding here, before ``skewguard.cli`` and its imports (click, pydantic:
~0.2 s), spares the first interpreter that work.
"""

from __future__ import annotations

import os
import sys


def run_optimized() -> None:
    """Replace this process by ``python -O -m skewguard serve ...`` unless it already is one.

    Only ``skewguard serve`` does; other commands (and a process under ``-O``) return at once.
    """
    if sys.flags.optimize or sys.argv[1:2] != ["serve"]:
        return
    os.execv(sys.executable, [sys.executable, "-O", "-m", "skewguard", *sys.argv[1:]])


def main() -> None:
    run_optimized()
    from skewguard.cli import main as cli_main

    cli_main()
