"""A user's Feast repository: its definitions applied, its values materialized, point-in-time joins.

The repository is a folder of Feast definition files, as ``feast apply`` reads it: every
``.py`` file (``.feastignore`` honoured) is run and the Feast objects it defines are
collected; no ``feature_store.yaml`` is needed, because skewguard sets the project, the
registry and the online store itself (:mod:`skewguard.featurestore.connection`).

Two facts about Feast 0.67 this module works around (both checked in its tests):

- The file offline store *drops* an entity row whose entity has snapshots but none
  within the TTL, and collapses rows with the same key and timestamp. We send each
  (entity, time) once and join the answers back, so every input row comes back, in
  input order, with NaN where Feast has no value.
- Online reads ignore the TTL, so :func:`materialize` writes only snapshots within each
  view's TTL before ``end``: a fresh online store answers what a training join as of
  ``end`` would. A value written earlier stays, though, until a newer one replaces it
  (the gateway checks each value's age: ``skewguard.featurestore.online``).
"""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from skewguard.errors import ConfigError, InputError
from skewguard.featurestore.connection import FeastConfig, open_store, translate_feast_errors
from skewguard.featurestore.online import EntityType

EVENT_TS = "event_timestamp"
_TS_DTYPE = "datetime64[ns, UTC]"
_APPLY_HINT = "Run `skewguard features apply -f <cascade file>` first."


@dataclass(frozen=True, slots=True)
class FeatureSelection:
    """The features a cascade reads, resolved against the registry."""

    entity_key: str
    entity_type: EntityType
    refs: dict[str, str]
    """Feature name (the training column and model input) → ``view:feature``."""
    ttl_seconds: dict[str, float]
    """Feature name → its view's TTL (absent: the view keeps values forever)."""


@dataclass(frozen=True, slots=True)
class Materialization:
    """What :func:`materialize` wrote: per view, the latest snapshot in [start, end] per entity."""

    views: tuple[str, ...]
    start: datetime
    end: datetime
    online_store: str


def load_definitions(repo_dir: Path) -> list[Any]:
    """Every Feast object the repository's ``.py`` files define (each file run by path)."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource
    from feast.repo_operations import get_repo_files

    if not repo_dir.is_dir():
        raise ConfigError(f"The Feast repository {repo_dir} is not a folder.", field="features.repository")
    kinds = (Entity, DataSource, FeatureView, FeatureService)
    found: dict[int, Any] = {}
    with warnings.catch_warnings():  # Feast's ignore-file matching warns of pathspec's deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        files = get_repo_files(repo_dir.resolve())
    sys.path.insert(0, str(repo_dir.resolve()))  # definitions may import their siblings
    try:
        for path in files:
            namespace = runpy.run_path(str(path), run_name=f"skewguard_feast_{path.stem}")
            found.update({id(obj): obj for obj in namespace.values() if isinstance(obj, kinds)})
    finally:
        sys.path.remove(str(repo_dir.resolve()))
    if not found:
        raise ConfigError(
            f"The Feast repository {repo_dir} defines no Feast objects (entities, feature views...).",
            field="features.repository",
        )
    return list({(type(obj).__name__, obj.name): obj for obj in found.values()}.values())


def apply_repository(config: FeastConfig) -> list[str]:
    """Register the repository's definitions in the project's registry; the objects' names."""
    if config.repo_dir is None:
        raise ConfigError("No Feast repository is configured for this cascade.", field="features.repository")
    objects = load_definitions(config.repo_dir)
    with translate_feast_errors("apply the definitions", config, f"Check the files in {config.repo_dir}."):
        open_store(config).apply(objects)
    return [f"{type(obj).__name__} {obj.name}" for obj in objects]


def resolve_features(
    config: FeastConfig, *, entity_key: str, service: str | None = None, refs: Sequence[str] = ()
) -> FeatureSelection:
    """The applied features of a feature service, or the given ``view:feature`` references."""
    with translate_feast_errors("read the feature definitions", config, _APPLY_HINT):
        store = open_store(config)
        pairs = _service_refs(store, service) if service else [_split(ref) for ref in refs]
        views = {name: store.get_feature_view(name) for name, _ in pairs}
        entity_type = _entity_type(store, views.values(), entity_key)
    selected: dict[str, str] = {}
    ttl: dict[str, float] = {}
    for view_name, feature in pairs:
        view = views[view_name]
        if feature not in {f.name for f in view.features}:
            raise ConfigError(
                f"Feature view {view_name!r} has no feature {feature!r}; it has "
                f"{', '.join(f.name for f in view.features)}.",
                field="features.refs",
            )
        if feature in selected:
            raise ConfigError(
                f"Feature {feature!r} is selected from two views ({selected[feature]} and "
                f"{view_name}:{feature}); the training columns need distinct names.",
                field="features.refs",
            )
        selected[feature] = f"{view_name}:{feature}"
        if view.ttl:
            ttl[feature] = view.ttl.total_seconds()
    return FeatureSelection(entity_key, entity_type, selected, ttl)


def _service_refs(store: Any, service: str) -> list[tuple[str, str]]:
    found = store.get_feature_service(service)
    return [(p.name, f.name) for p in found.feature_view_projections for f in p.features]


def _split(ref: str) -> tuple[str, str]:
    view, sep, feature = ref.partition(":")
    if not sep or not view or not feature:
        raise ConfigError(f"Feature reference {ref!r} is not 'view:feature'.", field="features.refs")
    return view, feature


def _entity_type(store: Any, views: Any, entity_key: str) -> EntityType:
    """int64 or string: the value type of the views' entity with join key ``entity_key``."""
    from feast import ValueType

    for view in views:
        for name in view.entities:
            entity = store.get_entity(name)
            if entity.join_key == entity_key:
                return "string" if entity.value_type == ValueType.STRING else "int64"
    names = sorted({store.get_entity(n).join_key for view in views for n in view.entities})
    raise ConfigError(
        f"The features are not keyed by {entity_key!r}: their views' entities join on {names}. "
        "Set features.entity_key to one of them.",
        field="features.entity_key",
    )


def latest_event_time(config: FeastConfig, views: Sequence[str]) -> datetime:
    """Just after the newest snapshot in the views' file sources: 'now' for a history of data."""
    with translate_feast_errors("read the feature views", config, _APPLY_HINT):
        store = open_store(config)
        sources = [store.get_feature_view(name).batch_source for name in views]
    newest: list[datetime] = []
    for source in sources:
        path = getattr(source, "path", None)
        if source is None or path is None:
            return datetime.now(UTC)
        full = Path(path) if Path(path).is_absolute() or config.repo_dir is None else config.repo_dir / path
        try:
            stamps = pd.read_parquet(full, columns=[source.timestamp_field])[source.timestamp_field]
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read the feature source {full}: {exc}.", field="features") from exc
        newest.append(pd.Timestamp(stamps.max()).tz_localize(None).to_pydatetime().replace(tzinfo=UTC))
    return max(newest) + timedelta(seconds=1)


def materialize(
    config: FeastConfig, views: Sequence[str], *, end: datetime, start: datetime | None = None
) -> Materialization:
    """Write each entity's latest snapshot in [start, end] of every view to the online store.

    ``start`` defaults to ``end`` minus each view's TTL, so an entity without a fresh
    snapshot is not written; naive datetimes are UTC. Values written before stay.
    """
    end = _as_utc(end)
    begins = []
    with translate_feast_errors("materialize", config, _APPLY_HINT):
        store = open_store(config)
        for name in views:
            ttl = store.get_feature_view(name).ttl
            begin = _as_utc(start) if start else end - ttl if ttl else datetime(1970, 1, 1, tzinfo=UTC)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                store.materialize(start_date=begin, end_date=end, feature_views=[name])  # its colours, bars
            begins.append(begin)
    return Materialization(tuple(views), min(begins, default=end), end, config.online_store)


def teardown(config: FeastConfig) -> None:
    """Delete the project's online values and its registry (the source data stays)."""
    with translate_feast_errors("tear down the feature store", config, "Is the online store reachable?"):
        open_store(config).teardown()  # type: ignore[no-untyped-call]  # Feast leaves it unannotated


def historical_features(
    config: FeastConfig, entity_df: pd.DataFrame, selection: FeatureSelection, *, timestamp_column: str
) -> pd.DataFrame:
    """``entity_df`` with the selected features as of each row's time (point in time), in input order.

    Every row gets its entity's latest snapshot at or before its timestamp and not older
    than the TTL, else NaN. Features come back as float64 columns named by feature.
    """
    key, names = selection.entity_key, list(selection.refs)
    keys = _entity_frame(entity_df, selection, timestamp_column)
    unique = keys.dropna().drop_duplicates(ignore_index=True)
    if unique.empty:
        joined = pd.DataFrame({key: [], EVENT_TS: [], **{name: [] for name in names}})
    else:
        with translate_feast_errors("build the point-in-time join", config, _APPLY_HINT):
            job = open_store(config).get_historical_features(
                entity_df=unique, features=list(selection.refs.values())
            )
            joined = job.to_df()[[key, EVENT_TS, *names]]
    joined = joined.astype({key: keys[key].dtype, EVENT_TS: _TS_DTYPE})
    merged = keys.merge(joined, on=[key, EVENT_TS], how="left", validate="many_to_one")
    out = entity_df.copy()
    for name in names:
        out[name] = pd.to_numeric(merged[name], errors="coerce").to_numpy(dtype="float64")
    return out


def _entity_frame(
    entity_df: pd.DataFrame, selection: FeatureSelection, timestamp_column: str
) -> pd.DataFrame:
    """(entity key, event_timestamp UTC) per input row, checked; NaT stays NaT."""
    key = selection.entity_key
    missing = [column for column in (key, timestamp_column) if column not in entity_df.columns]
    if missing:
        raise InputError(
            f"The data lacks the columns {', '.join(missing)}; expected {key} and "
            f"{timestamp_column} (the time each row's features are wanted for).",
            field=missing[0],
        )
    taken = [name for name in selection.refs if name in entity_df.columns]
    if taken:
        raise InputError(
            f"The data already has the feature columns {', '.join(taken)}; drop them first "
            "so the point-in-time values are not mixed with others.",
            field=taken[0],
        )
    strings = selection.entity_type == "string"
    try:
        ids = entity_df[key].astype(str if strings else "int64").reset_index(drop=True)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"The data's {key} must hold {'strings' if strings else 'whole numbers'} without gaps ({exc}).",
            field=key,
        ) from exc
    try:
        times = pd.to_datetime(entity_df[timestamp_column], utc=True).astype(_TS_DTYPE).reset_index(drop=True)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"The data's {timestamp_column} must hold timestamps ({exc}).", field=timestamp_column
        ) from exc
    return pd.DataFrame({key: ids, EVENT_TS: times})


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
