"""The online feature reader: each customer's latest materialized ``customer_stats``, via Feast.

One Feast call per :meth:`FeastFeatureSource.get`, whatever the number of ids (Feast's
cost is mostly per call): a caller serving concurrent requests should gather their ids
into one ``get``. Feast does not apply the view's TTL to online reads; freshness is
decided at materialization (see ``pipeline.features.materialize_features``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.features import (
    ENTITY_KEY,
    FEATURE_NAMES,
    FEATURE_REFS,
    FeastConfig,
    open_store,
    translate_feast_errors,
)

_HINT = (
    "Check that the online store is reachable (SKEWGUARD_ONLINE_STORE, SKEWGUARD_REDIS_URL) "
    "and that `skewguard features apply` and `skewguard features materialize` ran."
)
_PROBE_ID = -1  # no customer has it: a start-up read that touches registry and store


class FeastFeatureSource:
    """``get(ids)`` → one ``{feature: value}`` per id, every value None for an unknown id.

    Opening it reads the registry and the online store once, so a missing ``apply`` or an
    unreachable Redis fails at start-up rather than on the first request.
    """

    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __init__(self, config: FeastConfig) -> None:
        self.config = config
        self._refs = list(FEATURE_REFS)
        with translate_feast_errors("open the online store", config, _HINT):
            self._store = open_store(config)
            self._store.get_online_features(features=self._refs, entity_rows={ENTITY_KEY: [_PROBE_ID]})

    def get(self, entity_ids: Sequence[int]) -> list[dict[str, float | None]]:
        """The features of each customer id, in the order asked; repeated ids are fine."""
        if not entity_ids:
            return []
        rows = {ENTITY_KEY: [int(entity_id) for entity_id in entity_ids]}
        with translate_feast_errors("read online features", self.config, _HINT):
            columns = self._store.get_online_features(features=self._refs, entity_rows=rows).to_dict()
        values = [columns[name] for name in FEATURE_NAMES]
        return [
            {
                name: None if column[row] is None else float(column[row])
                for name, column in zip(FEATURE_NAMES, values, strict=True)
            }
            for row in range(len(entity_ids))
        ]
