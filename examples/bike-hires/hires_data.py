"""Seeded synthetic London-style bike hires: station, start time, rider, temperature → duration.

The Transform example of "Machine Learning Design Patterns": a hire's duration depends on
the station's surroundings, the hour and the day of week of its start (which the model
computes from the raw start time, inside its graph) and who rides. Long hires (over
``LONG_MINUTES``) follow other rules than commutes, which is what the cascade's router
learns (``is_long``) and each branch's regressor specialises in. ``station_stats`` holds
a daily snapshot per station of its recent hires, so a point-in-time join gives each hire
the statistics known at its start, not later ones. One seed, one generator, same bytes.

    python hires_data.py [--hires 20000] [--seed 0]     # writes data/ beside this file
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LONG_MINUTES = 30.0
START = pd.Timestamp("2026-03-02", tz="UTC")  # a Monday
ZONES = ("central", "park", "residential", "riverside")
ZONE_MINUTES = np.array([11.0, 26.0, 15.0, 20.0])
STREETS = (
    "Strand",
    "Hyde Park Corner",
    "Bow Road",
    "Southbank",
    "Holborn",
    "Regent's Park",
    "Mile End",
    "Battersea",
    "Waterloo",
    "Kensington Gardens",
    "Hackney Wick",
    "Putney Bridge",
)
FILES = {"hires": "hires.parquet", "station_stats": "station_stats.parquet"}
_DAY = 86_400
_COMMUTE_HOURS = np.array(
    [
        0.2,
        0.1,
        0.1,
        0.1,
        0.2,
        0.6,
        2.0,
        5.5,
        7.0,
        3.5,
        2.0,
        2.2,
        2.6,
        2.4,
        2.2,
        2.6,
        4.0,
        6.5,
        5.0,
        3.0,
        2.0,
        1.4,
        0.9,
        0.5,
    ]
)
_LEISURE_HOURS = np.array(
    [
        0.3,
        0.2,
        0.1,
        0.1,
        0.1,
        0.2,
        0.5,
        1.0,
        1.8,
        3.0,
        4.5,
        5.5,
        6.0,
        6.2,
        6.0,
        5.5,
        4.8,
        3.8,
        3.0,
        2.2,
        1.6,
        1.1,
        0.7,
        0.4,
    ]
)


@dataclass(frozen=True, slots=True)
class HireData:
    """The hires (with their durations) and the stations' daily statistics."""

    hires: pd.DataFrame
    station_stats: pd.DataFrame


def generate_hires(
    n_hires: int = 20_000,
    n_stations: int = 36,
    n_days: int = 84,
    seed: int = 0,
    start: pd.Timestamp = START,
    warmer: float = 0.0,
) -> HireData:
    """``n_hires`` hires over ``n_days`` days from ``start`` at ``n_stations`` stations.

    ``warmer`` adds degrees to every day's temperature: a drift the monitor should see.
    """
    rng = np.random.default_rng(seed)
    zones = rng.integers(0, len(ZONES), n_stations)
    station = rng.integers(0, n_stations, n_hires)
    day = np.sort(rng.integers(0, n_days, n_hires))
    weekday = (day % 7) < 5
    commute = weekday & (rng.random(n_hires) < 0.65)
    hour = np.where(
        commute,
        rng.choice(24, n_hires, p=_COMMUTE_HOURS / _COMMUTE_HOURS.sum()),
        rng.choice(24, n_hires, p=_LEISURE_HOURS / _LEISURE_HOURS.sum()),
    )
    seconds = start.timestamp() + day * _DAY + hour * 3_600 + rng.integers(0, 3_600, n_hires)
    offset = (start - START).days
    temperature = (
        warmer + 9 + 8 * np.sin(2 * np.pi * (day + offset - 20) / 365) + rng.normal(0, 3, n_days)[day]
    )
    casual = rng.random(n_hires) < np.where(commute, 0.12, 0.55)
    minutes = _durations(rng, ZONE_MINUTES[zones[station]], casual, weekday, hour, temperature)
    hires = pd.DataFrame(
        {
            "hire_id": [f"h{seed}-{i:06d}" for i in range(n_hires)],
            "station_id": (1_000 + station).astype(np.int64),
            "station": [f"{STREETS[s % len(STREETS)]} {s // len(STREETS) + 1}" for s in station],
            "start_time": pd.to_datetime(seconds, unit="s", utc=True),
            "rider": np.where(casual, "casual", "member"),
            "temperature_c": np.round(temperature, 1),
            "duration_min": np.round(minutes, 2),
            "is_long": (minutes > LONG_MINUTES).astype(np.int64),
        }
    )
    return HireData(hires, _station_stats(hires, n_stations, n_days, start))


def _durations(
    rng: np.random.Generator,
    base: np.ndarray,
    casual: np.ndarray,
    weekday: np.ndarray,
    hour: np.ndarray,
    temperature: np.ndarray,
) -> np.ndarray:
    peak = np.isin(hour, (7, 8, 17, 18))
    scale = base * np.where(casual, 1.9, 1.0) * np.where(weekday, 1.0, 1.35) * np.where(peak, 0.8, 1.0)
    scale *= 1.0 + 0.02 * np.clip(temperature - 10, -8, 12)
    return np.asarray(np.clip(scale * rng.lognormal(0.0, 0.45, len(base)), 2.0, 240.0))


def _station_stats(hires: pd.DataFrame, n_stations: int, n_days: int, start: pd.Timestamp) -> pd.DataFrame:
    """A snapshot per station and day (at midnight) of its hires in the 7 days before."""
    day = ((hires["start_time"] - start).dt.days).to_numpy()
    rows = []
    for station_id in range(1_000, 1_000 + n_stations):
        mine = hires["station_id"].to_numpy() == station_id
        for d in range(1, n_days + 1):
            window = mine & (day >= d - 7) & (day < d)
            durations = hires["duration_min"].to_numpy()[window]
            rows.append(
                {
                    "station_id": station_id,
                    "event_timestamp": start + pd.Timedelta(days=d),
                    "hires_7d": int(window.sum()),
                    "mean_duration_7d": float(durations.mean()) if durations.size else 0.0,
                    "long_share_7d": float((durations > LONG_MINUTES).mean()) if durations.size else 0.0,
                }
            )
    return pd.DataFrame(rows)


def write_hires(data: HireData, folder: Path) -> dict[str, Path]:
    """``hires.parquet`` and ``station_stats.parquet`` in ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / file for name, file in FILES.items()}
    data.hires.to_parquet(paths["hires"], index=False)
    data.station_stats.to_parquet(paths["station_stats"], index=False)
    return paths


def load_hires(folder: Path) -> HireData:
    """The files ``write_hires`` wrote."""
    return HireData(
        pd.read_parquet(folder / FILES["hires"]), pd.read_parquet(folder / FILES["station_stats"])
    )


def fresh_hires(folder: Path, *, n_hires: int, days: int, seed: int, warmer: float = 0.0) -> HireData:
    """Hires (with their later durations) from the day after the newest one in ``folder``."""
    known = load_hires(folder)
    start = (known.hires["start_time"].max() + pd.Timedelta(days=1)).normalize()
    batch = generate_hires(n_hires, n_days=days, seed=seed, start=start, warmer=warmer)
    return HireData(batch.hires.assign(hire_id=f"s{seed}-" + batch.hires["hire_id"]), batch.station_stats)


def append_hires(folder: Path, batch: HireData) -> int:
    """Add hires whose durations are now known to the history (and their stations' snapshots); the count."""
    known = load_hires(folder)
    hires = pd.concat([known.hires, batch.hires], ignore_index=True).drop_duplicates("hire_id")
    stats = pd.concat([known.station_stats, batch.station_stats], ignore_index=True)
    stats = stats.drop_duplicates(["station_id", "event_timestamp"], keep="last")
    write_hires(HireData(hires.sort_values("start_time", ignore_index=True), stats), folder)
    return len(hires)


def write_example_data(folder: Path, *, rows: int = 20_000, seed: int = 0) -> dict[str, Path]:
    """The example's data files in ``folder`` (what ``skewguard demo-data`` calls)."""
    return write_hires(generate_hires(n_hires=rows, seed=seed), folder)


def example_request(folder: Path) -> dict[str, Any]:
    """A real request body from the written data: its newest hire."""
    hires = pd.read_parquet(folder / FILES["hires"])
    return {"rows": [request_row(hires.sort_values("start_time").iloc[-1])]}


def request_row(hire: Mapping[str, Any]) -> dict[str, Any]:
    """One hire as a client sends it when the bike is taken: station, start time, rider, weather."""
    return {
        "station_id": int(hire["station_id"]),
        "station": str(hire["station"]),
        "start_time": pd.Timestamp(hire["start_time"]).isoformat(),
        "rider": str(hire["rider"]),
        "temperature_c": float(hire["temperature_c"]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hires", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    for name, path in write_example_data(
        Path(__file__).parent / "data", rows=arguments.hires, seed=arguments.seed
    ).items():
        print(f"wrote {name}: {path}")
