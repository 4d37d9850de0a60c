"""The reports server: its index and file serving in-process, then a real run opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from PIL import Image, ImageStat

from skewguard.bentos.manifest import CascadeManifest
from skewguard.cli_ops import reports_serve
from skewguard.monitoring import job
from skewguard.monitoring.reports_server import HTML_FILE, METRICS_FILE, SUMMARY_FILE, create_app
from skewguard.monitoring.verdict import DriftPolicy
from tests.monitoring.conftest import WATCHED

CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "chromium is not installed (Debian package `chromium`; .ci/run installs it when missing)"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing but our server resolves
)
WINDOW = (1280, 1600)


def _summary(created_at: str, *, cascade: str = "returns", drift: bool | None = True) -> dict[str, Any]:
    """A JSON summary of the shape ``DriftSummary.to_dict`` writes (only what the index reads)."""
    return {
        "format": 1,
        "cascade": cascade,
        "created_at": created_at,
        "window": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-02T00:00:00+00:00"},
        "verdict": {"drift": drift, "reasons": ["price drifted (wasserstein 0.31 > 0.1)"]},
        "overall": {"share_drifted": 0.25},
        "branches": {},
        "notes": [],
    }


def _write_run(folder: Path, summary: dict[str, Any], page: str = "<html><body>report</body></html>") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    (folder / HTML_FILE).write_text(page)


class _Links(HTMLParser):
    """Collects ``<a class=... href=...>`` and the external resources a page would fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "a":
            self.links.append((values.get("class", ""), values.get("href", "")))
        for name in ("src", "href"):
            url = values.get(name, "").strip().lower()
            if tag != "a" and url.startswith(("http:", "https:", "//")):
                self.external.append(f"<{tag} {name}={url}>")


def _parse(page: str) -> _Links:
    parser = _Links()
    parser.feed(page)
    return parser


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    _write_run(root / "a", _summary("2026-11-20T08:00:00+00:00"), "<html><body>older</body></html>")
    _write_run(root / "b" / "c", _summary("2026-11-21T08:00:00+00:00", drift=None), "<html>newest</html>")
    _write_run(root, _summary("2026-11-19T08:00:00+00:00", drift=False))
    (tmp_path / "secret.txt").write_text("not a report")
    return root


async def _get(root: Path, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(root))
    async with httpx.AsyncClient(transport=transport, base_url="http://reports") as client:
        return await client.get(path)


@pytest.mark.anyio
async def test_the_index_lists_every_run_newest_first(reports: Path) -> None:
    response = await _get(reports, "/")
    assert response.status_code == 200
    page = _parse(response.text)
    assert [href for kind, href in page.links if kind == "report"] == [
        "/files/b/c/drift-report.html",
        "/files/a/drift-report.html",
        "/files/drift-report.html",
    ]
    assert "undecided" in response.text
    assert "no drift" in response.text
    assert "25%" in response.text
    assert "2026-11-21 08:00:00" in response.text


@pytest.mark.anyio
async def test_the_index_links_serve_the_report_and_its_summary(reports: Path) -> None:
    report = await _get(reports, "/files/a/drift-report.html")
    assert report.status_code == 200
    assert report.text == "<html><body>older</body></html>"
    assert report.headers["content-type"].startswith("text/html")
    summary = await _get(reports, "/files/a/drift-summary.json")
    assert summary.json()["created_at"] == "2026-11-20T08:00:00+00:00"


@pytest.mark.anyio
async def test_an_unreadable_summary_is_listed_not_fatal(reports: Path) -> None:
    (reports / "broken").mkdir()
    (reports / "broken" / SUMMARY_FILE).write_text("{not json")
    (reports / "other").mkdir()
    (reports / "other" / SUMMARY_FILE).write_text('["a list"]')
    response = await _get(reports, "/")
    assert response.status_code == 200
    assert response.text.count(">unreadable<") == 2
    listed = (await _get(reports, "/index.json")).json()
    assert {entry["folder"] for entry in listed if entry["problem"]} == {"broken", "other"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/files/%2e%2e/secret.txt",
        "/files/..%2fsecret.txt",
        "/files/a/%2e%2e/%2e%2e/secret.txt",
        "/files/%2fetc%2fpasswd",
        "/files//etc/passwd",
        "/files/..\\secret.txt",
    ],
)
async def test_no_path_leads_out_of_the_reports_folder(reports: Path, path: str) -> None:
    response = await _get(reports, path)
    assert response.status_code == 404
    assert "not a report" not in response.text
    assert "root:" not in response.text


@pytest.mark.anyio
async def test_a_symlink_out_of_the_folder_is_not_followed(reports: Path) -> None:
    (reports / "link.txt").symlink_to(reports.parent / "secret.txt")
    (reports / "linked").symlink_to(reports.parent, target_is_directory=True)
    assert (await _get(reports, "/files/link.txt")).status_code == 404
    assert (await _get(reports, "/files/linked/secret.txt")).status_code == 404
    assert (await _get(reports, "/files/a/drift-report.html")).status_code == 200


@pytest.mark.anyio
async def test_an_empty_or_missing_folder_gives_an_index_not_an_error(tmp_path: Path) -> None:
    response = await _get(tmp_path / "nothing-yet", "/")
    assert response.status_code == 200
    assert "No reports yet" in response.text
    assert (await _get(tmp_path / "nothing-yet", "/files/drift-report.html")).status_code == 404


def test_the_server_reads_the_files_the_job_writes() -> None:
    assert (HTML_FILE, SUMMARY_FILE, METRICS_FILE) == (job.HTML_FILE, job.SUMMARY_FILE, job.METRICS_FILE)


def test_the_server_binds_localhost_by_default() -> None:
    defaults = {param.name: param.default for param in reports_serve.params}
    assert defaults["host"] == "127.0.0.1"


# --- a real report, the real server, headless Chromium ------------------------------------


@pytest.fixture(scope="module")
def drift_reports(
    tmp_path_factory: pytest.TempPathFactory,
    training: pd.DataFrame,
    drifted_records: list[dict[str, Any]],
    cascade: CascadeManifest,
) -> Path:
    """A real drift run (the newest) and an older run beside it, as `skewguard monitor --out` leaves them."""
    root = tmp_path_factory.mktemp("reports")
    result = job.check_drift(
        drifted_records, training, cascade, root / "newer", policy=DriftPolicy(watched=WATCHED)
    )
    older = _summary("2020-01-01T00:00:00+00:00", cascade=cascade.name, drift=False)
    _write_run(root / "older", older, "<html><head><title>older run</title></head><body>old</body></html>")
    assert result.summary_json.parent == root / "newer"
    return root


@pytest.fixture(scope="module")
def server(drift_reports: Path) -> Iterator[str]:
    """`skewguard reports serve` in its own process, on a free port of 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "skewguard", "reports", "serve", "--dir", str(drift_reports)]
    process = subprocess.Popen([*command, "--port", str(port)], env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the reports server did not come up (exit code {process.poll()})")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _chromium(tmp_path: Path, *args: str) -> str:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    completed = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2_000:]
    return completed.stdout


def _strip_scripts(page: str) -> str:
    """The page without the contents of its <script> elements."""
    parts, rest = [], page
    while (start := rest.find("<script")) != -1:
        parts.append(rest[:start])
        end = rest.find("</script>", start)
        rest = rest[end + len("</script>") :] if end != -1 else ""
    return "".join(parts) + rest


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_newest_report_renders_in_headless_chromium(
    drift_reports: Path, server: str, tmp_path: Path
) -> None:
    index = _parse(_chromium(tmp_path, "--dump-dom", f"{server}/"))
    reports = [href for kind, href in index.links if kind == "report"]
    assert reports == ["/files/newer/drift-report.html", "/files/older/drift-report.html"]

    url = f"{server}{reports[0]}"
    raw = (drift_reports / "newer" / HTML_FILE).read_text(encoding="utf-8")
    assert _parse(raw).external == []  # self-contained: scripts, styles and fonts inlined
    dom = _chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", url)
    assert "<title>Drift report: monitor — overall</title>" in dom
    rendered = _strip_scripts(dom)
    for text in ("main-svg", "Drift in column 'price'", "L-infinity distance"):
        assert text in rendered, text
        assert text not in _strip_scripts(raw), f"{text!r} should come from running the scripts"

    shot = tmp_path / "report.png"
    size = f"--window-size={WINDOW[0]},{WINDOW[1]}"
    _chromium(tmp_path, "--virtual-time-budget=15000", size, f"--screenshot={shot}", url)
    with Image.open(shot) as image:
        assert image.size == WINDOW
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000)
        assert colours is not None
        assert len(colours) > 50, f"{len(colours)} colours: a blank or near-blank page"
        assert max(ImageStat.Stat(rgb).stddev) > 10
