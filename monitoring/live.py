"""The live comparison as a job: a window of the log, the cascade's manifest and its labels → the figures.

``compare_served`` reads what the pure ``skewguard.monitoring.comparison`` needs from the
model store (the champion's task, target, entity key and event time field) and joins the
labels (``skewguard.monitoring.labels``); ``skewguard compare`` prints it and the promotion
gate judges it. ``add_to_report`` puts it in a drift run's folder: a section of the HTML
report and a ``live_comparison`` key in its summary JSON.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skewguard.bentos.manifest import champion
from skewguard.errors import ConfigError
from skewguard.monitoring.comparison import Comparison, compare_live, describe_comparison
from skewguard.monitoring.labels import join_labels
from skewguard.monitoring.scoring import RESAMPLES

SECTION_ID = "live-comparison"


def compare_served(
    name: str,
    records: Sequence[Mapping[str, Any]],
    *,
    labels: pd.DataFrame | None = None,
    candidate: str | None = None,
    metric: str = "auto",
    resamples: int = RESAMPLES,
) -> Comparison:
    """Cascade ``name``'s champion vs its candidate on ``records``, scored on ``labels`` where they join."""
    manifest = champion(name)
    if manifest is None:
        raise ConfigError(f"No champion cascade named {name!r}.", field="name")
    joined = None
    if labels is not None and manifest.target is not None:
        joined = join_labels(
            records,
            labels,
            target=manifest.target,
            entity_key=manifest.entity_key,
            time_field=manifest.event_time_field,
        )
    return compare_live(
        records,
        cascade=name,
        task=manifest.task,
        candidate=candidate,
        labels=joined,
        metric=metric,
        resamples=resamples,
    )


def add_to_report(folder: Path, html_file: Path, summary_file: Path, found: Comparison) -> None:
    """The comparison as a section at the top of the HTML report and a key of the summary JSON."""
    section = (
        f"<section id='{SECTION_ID}' style='font-family:sans-serif;margin:16px'>"
        f"<h2>Live comparison: champion vs {html.escape(found.mode)}</h2>"
        f"<pre>{html.escape(chr(10).join(describe_comparison(found)))}</pre></section>"
    )
    page = html_file.read_text(encoding="utf-8")
    body = re.search(r"<body[^>]*>", page)
    at = body.end() if body else len(page)
    html_file.write_text(page[:at] + section + page[at:], encoding="utf-8")
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    summary["live_comparison"] = found.to_dict()
    staged = folder / f".{summary_file.name}.live"
    staged.write_text(json.dumps(summary, indent=1, default=_plain) + "\n", encoding="utf-8")
    staged.replace(summary_file)  # a reader sees the summary without or with the section, never half


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)
