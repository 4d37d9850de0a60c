"""One function computed in a forked child while this process goes on; its result comes back through a pipe.

The drift job computes its branch scopes this way beside the overall report. Evidently's
work is Python under the GIL, so a thread would only take turns with the report; a fork
shares the frames copy-on-write, and a second CPU does the branches meanwhile. The result
is pickled through a pipe between this process and its own child (nothing from outside is
unpickled).

It runs in this process instead (when ``result()`` is called) if there is one usable CPU,
if ``os.fork`` is missing, or if other Python threads are running: a child forked while
another thread holds a lock (logging's, the import lock) can wait on it forever.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from skewguard.errors import DriftReportError

T = TypeVar("T")


def can_fork() -> bool:
    """Whether a forked child can work beside this process: fork exists, 2+ CPUs, no other threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return hasattr(os, "fork") and cpus > 1 and threading.active_count() == 1


class Forked(Generic[T]):
    """``fn(*args)``, started now in a forked child when :func:`can_fork`, else at :meth:`result`."""

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        self._call = (fn, args)
        self._pid: int | None = None
        self._read = -1
        self.forked = can_fork()
        if self.forked:
            self._start()

    def _start(self) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, send, and leave without running the parent's exit hooks
            status = 0
            try:
                os.close(read)
                fn, args = self._call
                try:
                    payload = pickle.dumps((True, fn(*args)))
                except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
                    payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
                with os.fdopen(write, "wb") as sink:
                    sink.write(payload)
            except BaseException:  # noqa: BLE001 - the parent sees the empty pipe and the status
                status = 1
            finally:
                os._exit(status)
        os.close(write)
        self._pid, self._read = pid, read

    def result(self) -> T:
        """The value, or DriftReportError with what went wrong in the child."""
        fn, args = self._call
        if self._pid is None:
            return fn(*args)
        with os.fdopen(self._read, "rb") as source:
            payload = source.read()
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        if not payload:
            raise DriftReportError(
                f"The forked {getattr(fn, '__name__', 'computation')} ended without a result "
                f"(wait status {status})."
            )
        ok, value = pickle.loads(payload)  # noqa: S301 - written by our own child process
        if not ok:
            raise DriftReportError(str(value))
        result: T = value
        return result
