"""The reports server: an index of the drift reports in a folder, and the report files themselves.

``skewguard monitor`` writes ``drift-report.html``, ``drift-summary.json`` and
``drift-metrics.prom`` into a reports folder (``<home>/reports`` unless ``--out`` says
otherwise); runs written to subfolders (``--out <home>/reports/<run>``) are listed too,
one row per summary. The index is rebuilt from the summaries on every request, newest
first: time, cascade, window, verdict, share of drifted columns, and links.

Files are served by Starlette's ``StaticFiles``, which refuses paths leading out of the
folder (``..``, absolute paths, symlinks pointing elsewhere). Nothing here imports
Evidently: the server starts in well under a second and reads only our own JSON. It binds
127.0.0.1 by default because the reports have no authentication.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

HTML_FILE = "drift-report.html"
SUMMARY_FILE = "drift-summary.json"
METRICS_FILE = "drift-metrics.prom"
"""The names ``skewguard.monitoring.job`` writes (not imported from there: that module loads Evidently)."""
FILES_PREFIX = "/files"
MAX_ENTRIES = 500
"""Rows on the index page; the oldest beyond that are left out (they stay on disk and in /files)."""


@dataclass(frozen=True, slots=True)
class ReportEntry:
    """One run found in the reports folder; ``problem`` says why its summary could not be read."""

    folder: str
    """Relative to the reports folder, POSIX style; "" for the folder itself."""
    created_at: datetime | None
    cascade: str = ""
    window: tuple[str, str] | None = None
    drift: bool | None = None
    share_drifted: float | None = None
    reasons: tuple[str, ...] = ()
    has_html: bool = False
    has_metrics: bool = False
    problem: str = ""
    modified: float = 0.0

    def link(self, name: str) -> str:
        """URL of a file of this run under ``/files``."""
        relative = f"{self.folder}/{name}" if self.folder else name
        return f"{FILES_PREFIX}/{quote(relative)}"

    @property
    def verdict(self) -> str:
        if self.problem:
            return "unreadable"
        return {True: "drift", False: "no drift", None: "undecided"}[self.drift]


def find_reports(root: Path) -> list[ReportEntry]:
    """Every run under ``root`` (symlinks not followed), newest first."""
    entries: list[ReportEntry] = []
    for folder, _dirs, files in os.walk(root, followlinks=False):
        if SUMMARY_FILE in files:
            entries.append(read_entry(root, Path(folder)))
    return sorted(entries, key=_newest_first)


def read_entry(root: Path, folder: Path) -> ReportEntry:
    """The index row of the run in ``folder``; a summary that cannot be read still gets a row."""
    relative = folder.relative_to(root).as_posix()
    relative = "" if relative == "." else relative
    path = folder / SUMMARY_FILE
    found: dict[str, Any] = {
        "has_html": (folder / HTML_FILE).is_file(),
        "has_metrics": (folder / METRICS_FILE).is_file(),
        "modified": path.stat().st_mtime,
    }
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        return ReportEntry(relative, **_fields(summary), **found)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return ReportEntry(relative, None, problem=f"{type(exc).__name__}: {exc}", **found)


def _fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The index's columns from a JSON summary (``DriftSummary.to_dict``)."""
    window = summary.get("window")
    share = summary["overall"].get("share_drifted")
    return {
        "created_at": datetime.fromisoformat(summary["created_at"]),
        "cascade": str(summary.get("cascade", "")),
        "window": (str(window["start"]), str(window["end"])) if window else None,
        "drift": summary["verdict"]["drift"],
        "share_drifted": None if share is None else float(share),
        "reasons": tuple(str(r) for r in summary["verdict"].get("reasons", ())),
    }


def _newest_first(entry: ReportEntry) -> tuple[float, str]:
    moment = entry.created_at.timestamp() if entry.created_at is not None else entry.modified
    return -moment, entry.folder


def render_index(entries: list[ReportEntry], root: Path) -> str:
    """The index page: one table row per run, every value escaped."""
    shown = entries[:MAX_ENTRIES]
    rows = "\n".join(_row(entry) for entry in shown) or (
        '<tr><td colspan="7">No reports yet: run <code>skewguard monitor</code>.</td></tr>'
    )
    more = f"<p>{len(entries) - len(shown)} older runs not listed.</p>" if len(entries) > len(shown) else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>skewguard drift reports</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
        ".drift{color:#b00;font-weight:bold}</style></head><body>"
        f"<h1>skewguard drift reports</h1><p>Folder: <code>{html.escape(str(root))}</code>, newest first.</p>"
        '<table id="reports"><thead><tr><th>time (UTC)</th><th>cascade</th><th>window</th><th>verdict</th>'
        "<th>share drifted</th><th>reasons</th><th>files</th></tr></thead>"
        f"<tbody>\n{rows}\n</tbody></table>{more}</body></html>\n"
    )


def _row(entry: ReportEntry) -> str:
    when = f"{entry.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if entry.created_at else "?"
    window = f"{entry.window[0]} – {entry.window[1]}" if entry.window else ""
    share = "" if entry.share_drifted is None else f"{entry.share_drifted:.0%}"
    reasons = "; ".join(entry.reasons) if not entry.problem else entry.problem
    links = (
        [f'<a class="report" href="{html.escape(entry.link(HTML_FILE))}">report</a>']
        if entry.has_html
        else []
    )
    links.append(f'<a class="summary" href="{html.escape(entry.link(SUMMARY_FILE))}">summary</a>')
    if entry.has_metrics:
        links.append(f'<a class="metrics" href="{html.escape(entry.link(METRICS_FILE))}">metrics</a>')
    cells = [when, entry.cascade, window, entry.verdict, share, reasons]
    escaped = [html.escape(cell) for cell in cells]
    escaped[3] = f'<span class="{"drift" if entry.drift else "verdict"}">{escaped[3]}</span>'
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in escaped) + f"<td>{' '.join(links)}</td></tr>"


def create_app(root: Path) -> Starlette:
    """``/`` the index, ``/index.json`` the same as data, ``/files/...`` the files under ``root``."""
    root = root.resolve()

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(render_index(find_reports(root), root))

    async def index_json(request: Request) -> JSONResponse:
        return JSONResponse([_entry_json(entry) for entry in find_reports(root)[:MAX_ENTRIES]])

    return Starlette(
        routes=[
            Route("/", index),
            Route("/index.json", index_json),
            Mount(FILES_PREFIX, _ReportFiles(directory=root, check_dir=False), name="files"),
        ]
    )


class _ReportFiles(StaticFiles):
    """``StaticFiles`` that answers 404, not 500, while the reports folder does not exist yet."""

    async def check_config(self) -> None:
        if self.directory is not None and os.path.isdir(self.directory):
            await super().check_config()


def _entry_json(entry: ReportEntry) -> dict[str, Any]:
    return {
        "folder": entry.folder,
        "created_at": entry.created_at.isoformat() if entry.created_at else None,
        "cascade": entry.cascade,
        "window": list(entry.window) if entry.window else None,
        "verdict": entry.verdict,
        "share_drifted": entry.share_drifted,
        "report": entry.link(HTML_FILE) if entry.has_html else None,
        "summary": entry.link(SUMMARY_FILE),
        "problem": entry.problem or None,
    }


def serve_reports(root: Path, *, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve ``root`` under uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(root), host=host, port=port, log_level="warning")
