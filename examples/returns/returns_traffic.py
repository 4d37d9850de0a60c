"""Demo traffic after training: orders that arrive later, sent to the gateway, labeled later.

The demo's life after the champion is trained: new orders come in (``fresh_orders``, from a
date after the training data, optionally shifted by ``DriftKnobs``), clients send them to
the gateway (``send_orders``), and weeks later their return labels are known and join the
labeled history the next training run reads (``append_labeled``). Each fresh batch is drawn
with its own seed, so it never repeats training rows; its customer ids are the same range as
the training data's, and its customer-stats snapshots continue the history from its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from returns_data import (
    DemoData,
    DriftKnobs,
    generate_demo_data,
    load_demo_data,
    request_row,
    write_demo_data,
)

from skewguard.errors import ConfigError

__all__ = ["SendResult", "append_labeled", "fresh_orders", "send_orders"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """How the gateway answered: counts by HTTP status, and the served responses' bodies."""

    statuses: dict[int, int]
    responses: list[dict[str, Any]]

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


def fresh_orders(
    data_dir: Path,
    *,
    n_orders: int,
    days: int,
    seed: int,
    knobs: DriftKnobs | None = None,
    n_customers: int | None = None,
) -> DemoData:
    """Orders (with their later labels) starting the day after the newest labeled order."""
    known = load_demo_data(data_dir)
    if seed == 0:
        raise ConfigError("Fresh demo orders need a seed other than 0 (the training data's).", field="seed")
    start = (known.orders["order_ts"].max() + pd.Timedelta(days=1)).normalize()
    customers = n_customers or int(known.customer_stats["customer_id"].nunique())
    batch = generate_demo_data(
        n_orders=n_orders,
        n_customers=customers,
        seed=seed,
        start=start.strftime("%Y-%m-%d"),
        days=days,
        knobs=knobs or DriftKnobs(),
    )
    prefix = f"s{seed}-"
    return DemoData(
        orders=batch.orders.assign(order_id=prefix + batch.orders["order_id"]),
        customer_stats=batch.customer_stats,
    )


def append_labeled(data_dir: Path, batch: DemoData) -> dict[str, int]:
    """Add a batch whose labels are now known to the labeled history; return the new row counts.

    Orders already present (same ``order_id``) and snapshots already present (same customer
    and time) are not added twice, so appending the same batch again changes nothing.
    """
    known = load_demo_data(data_dir)
    orders = pd.concat([known.orders, batch.orders], ignore_index=True)
    orders = orders.drop_duplicates("order_id").sort_values("order_ts", kind="stable", ignore_index=True)
    stats = pd.concat([known.customer_stats, batch.customer_stats], ignore_index=True)
    stats = stats.drop_duplicates(["customer_id", "event_timestamp"]).sort_values(
        ["customer_id", "event_timestamp"], kind="stable", ignore_index=True
    )
    write_demo_data(DemoData(orders=orders, customer_stats=stats), data_dir)
    return {"orders": len(orders), "customer_stats": len(stats)}


def send_orders(
    url: str,
    cascade: str,
    orders: pd.DataFrame,
    *,
    token: str | None = None,
    concurrency: int = 8,
    timeout: float = 10.0,
) -> SendResult:
    """POST each order as one request to the gateway, ``concurrency`` at a time, in order-time order."""
    rows = [request_row(order) for order in orders.sort_values("order_ts").to_dict("records")]
    return asyncio.run(_send(url.rstrip("/"), cascade, rows, token, concurrency, timeout))


async def _send(
    url: str,
    cascade: str,
    rows: Sequence[dict[str, Any]],
    token: str | None,
    concurrency: int,
    timeout: float,
) -> SendResult:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    statuses: dict[int, int] = {}
    responses: list[dict[str, Any]] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)
    endpoint = f"{url}/v1/cascades/{cascade}/predict"

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            row = queue.get_nowait()
            response = await client.post(endpoint, json=row, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                responses.append(response.json())

    async with httpx.AsyncClient(timeout=timeout) as client:
        await asyncio.gather(*(worker(client) for _ in range(max(1, concurrency))))
    return SendResult(statuses=statuses, responses=responses)
