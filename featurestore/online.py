"""Online reads: each entity's latest materialized values of a cascade's features, with their event times.

:class:`OnlineFeatureReader` asks Feast's provider for the rows (``Provider.online_read``,
the call every online store implements), once per feature view, not
``FeatureStore.get_online_features``, which rebuilds its request context, response protos
and a column dict on every call. The views come from the registry when the store opens and
again every ``view_refresh_seconds``, so a re-applied view is picked up.

Feast does not apply a view's TTL to online reads: a value materialized long ago is
answered as if fresh. The reader therefore hands back each value's event time, and the
gateway treats a value older than its view's TTL as training's point-in-time join treats it
(missing).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from skewguard.errors import ConfigError
from skewguard.featurestore.connection import FeastConfig, open_store, translate_online_errors

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

EntityId = int | str
EntityType = Literal["int64", "string"]
_ONLINE_HINT = (
    "Check that the online store is reachable (SKEWGUARD_ONLINE_STORE, SKEWGUARD_REDIS_URL) "
    "and that `skewguard features apply -f <cascade file>` and `skewguard features materialize -f "
    "<cascade file>` ran for this cascade."
)


@dataclass(frozen=True, slots=True)
class OnlineRow:
    """One entity's values (None: never written, or written as null) and each value's event time."""

    values: dict[str, float | None]
    event_times: dict[str, float]
    """Feature → epoch seconds of the snapshot it came from (absent when the store has none)."""


class OnlineFeatureReader:
    """Blocking reads of one cascade's online features by entity key: one store read per view.

    ``refs`` maps each feature's name to its Feast reference ``view:feature``. Not
    thread-safe (SQLite's online store shares one connection): use it from one thread.
    """

    def __init__(
        self,
        config: FeastConfig,
        *,
        entity_key: str,
        refs: Mapping[str, str],
        entity_type: EntityType = "int64",
        view_refresh_seconds: float = 60.0,
    ) -> None:
        self.config = config
        self.entity_key = entity_key
        self.entity_type = entity_type
        self.view_refresh_seconds = view_refresh_seconds
        self._by_view = _group_by_view(refs)
        self.feature_names: tuple[str, ...] = tuple(refs)
        self._store: FeatureStore | None = None
        self._views: dict[str, FeatureView] = {}
        self._views_read_at = 0.0

    def read(self, entity_ids: Sequence[EntityId]) -> list[OnlineRow | None]:
        """Each entity's row, in the order asked; None for an entity no view has a row for.

        An entity is known when a row of it has an event time: for an unknown key SQLite's
        store answers none and Redis's the epoch (time 0), both without values.
        """
        if not entity_ids:
            return []
        values: list[dict[str, float | None]] = [{} for _ in entity_ids]
        stamps: list[dict[str, float]] = [{} for _ in entity_ids]
        known = [False] * len(entity_ids)
        with translate_online_errors("read online features", self.config, _ONLINE_HINT):
            store, views = self._open()
            keys = _entity_keys(self.entity_key, self.entity_type, entity_ids)
            for view_name, features in self._by_view.items():
                found = store.provider.online_read(
                    store.config, views[view_name], keys, list(features.values())
                )
                for i, (stamp, row) in enumerate(found):
                    seconds = stamp.timestamp() if stamp is not None else 0.0
                    seen = seconds > 0 and row is not None
                    known[i] = known[i] or seen
                    for name, feature in features.items():
                        values[i][name] = _number(row.get(feature)) if seen and row is not None else None
                        if seen:
                            stamps[i][name] = seconds
        return [OnlineRow(v, s) if k else None for v, s, k in zip(values, stamps, known, strict=True)]

    def _open(self) -> tuple[FeatureStore, dict[str, FeatureView]]:
        now = time.monotonic()
        if self._store is None:
            self._store = open_store(self.config)
        if not self._views or now - self._views_read_at > self.view_refresh_seconds:
            self._views = {name: self._store.get_feature_view(name) for name in self._by_view}
            self._views_read_at = now
        return self._store, self._views

    def import_store_modules(self) -> None:
        """Import what opening the store imports, and keep nothing open.

        Feast's ``FeatureStore`` imports ~700 modules when it is constructed (its registry,
        providers, FastAPI...), and its online store connects only on the first read. A
        pre-fork master calls this so that its workers share those pages instead of each
        importing them again (``skewguard.gateway.workers``).
        """
        open_store(self.config).provider.online_store  # noqa: B018 - the property imports the store's class

    def close(self) -> None:
        """Let go of the store (its connections close with it); the next read opens it again."""
        self._store = None
        self._views = {}


def _group_by_view(refs: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{view: {feature name: name in the view}}`` from ``{name: "view:feature"}``."""
    grouped: dict[str, dict[str, str]] = {}
    for name, ref in refs.items():
        view, sep, feature = ref.partition(":")
        if not sep or not view or not feature:
            raise ConfigError(f"Feature reference {ref!r} of {name!r} is not 'view:feature'.", field=name)
        grouped.setdefault(view, {})[name] = feature
    return grouped


def _entity_keys(join_key: str, entity_type: EntityType, entity_ids: Sequence[EntityId]) -> list[EntityKey]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    if entity_type == "string":
        return [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=str(i))]) for i in entity_ids]
    return [EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=int(i))]) for i in entity_ids]


def _number(value: Value | None) -> float | None:
    """A stored value as a float; None when the feature was never written or written as null."""
    kind = None if value is None else value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return float(getattr(value, kind))
