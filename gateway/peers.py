"""The sibling workers of one gateway (``SKEWGUARD_WORKERS`` > 1): who is ready, and reloads.

They share a folder made fresh for each run (the one their metric files are in). A worker
marks itself ready there once its lifespan has loaded the cascades and opened the log, so
``/readyz`` — answered by whichever worker accepts the probe — says ready only when every
worker is: connections accepted earlier would all stay with the first worker up. An admin
reload reaches one worker; it writes a new token to the marker file, and every other
worker's watcher, seeing the token change, reloads too.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

RELOAD_MARKER = "reload-requested"
READY_PREFIX = "ready-"


@dataclass(slots=True)
class Peers:
    """This worker's view of its siblings, through the shared ``folder``."""

    folder: Path
    workers: int
    seen: str = ""
    """The reload token this worker has acted on."""

    def mark_ready(self) -> None:
        (self.folder / f"{READY_PREFIX}{os.getpid()}").touch()

    def unmark_ready(self) -> None:
        (self.folder / f"{READY_PREFIX}{os.getpid()}").unlink(missing_ok=True)

    def not_ready(self) -> int:
        """How many of the workers are not (or no longer) ready: a dead worker's mark does not count."""
        alive = 0
        for mark in self.folder.glob(f"{READY_PREFIX}*"):
            pid = int(mark.name.removeprefix(READY_PREFIX))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            alive += 1
        return max(self.workers - alive, 0)

    def announce_reload(self) -> None:
        """Tell the other workers (their watchers) that a reload was asked for."""
        token = uuid.uuid4().hex
        staged = self.folder / f".{RELOAD_MARKER}.{os.getpid()}"
        staged.write_text(token)
        staged.replace(self.folder / RELOAD_MARKER)  # atomic: a watcher reads the old token or the new one
        self.seen = token

    def reload_announced(self) -> bool:
        """Whether another worker announced a reload since this one last looked."""
        try:
            token = (self.folder / RELOAD_MARKER).read_text()
        except FileNotFoundError:
            return False
        announced, self.seen = token != self.seen, token
        return announced
