"""How far billing trails the calls: settlement lag from billing's own histogram, and how
many events per second it settles when it has a backlog.

Billing exports `aig_billing_ledger_write_lag_seconds` (from a usage event's occurred_at,
stamped by the router when the call ends, to its ledger row and settlement being written)
and `aig_billing_events_total{result="settled"}` on its /metrics. The harness scrapes both
before and after a load step and waits until every call of the step is settled. The
histogram's buckets (…, 0.5, 1, 2.5, 5 s) only bracket a quantile, so on SQLite the exact
lags are read too: the control DB's `settlements` row of each event holds its occurred_at
and the settled_at billing stamped just before committing it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

LAG_METRIC = "aig_billing_ledger_write_lag_seconds"
SETTLED_METRIC = "aig_billing_events_total"
SETTLE_WAIT_S = 30.0  # at most this long for a step's last events to settle
QUIET_S = 2.0  # ... or until the settled count has not moved for this long


@dataclass
class Billing:
    """Where a stack's billing figures are read: every billing replica's /metrics, and the
    control DB when it is a SQLite file."""

    urls: list[str]
    db: Path | None = None


def sqlite_file(database_url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    return Path(database_url.removeprefix(prefix)) if database_url.startswith(prefix) else None


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def settlements_mark(db: Path | None) -> int:
    """The newest settlement's rowid: the rows after it are those settled later."""
    if db is None:
        return 0
    with contextlib.closing(_connect(db)) as connection:
        row = connection.execute("SELECT coalesce(max(rowid), 0) FROM settlements").fetchone()
    return int(row[0])


def settled_lags(db: Path | None, mark: int) -> list[float]:
    """settled_at - occurred_at, in seconds, of every settlement after `mark`."""
    if db is None:
        return []
    with contextlib.closing(_connect(db)) as connection:
        rows = connection.execute(
            "SELECT occurred_at, settled_at FROM settlements WHERE rowid > ?", (mark,)
        ).fetchall()
    return [
        (datetime.fromisoformat(settled) - datetime.fromisoformat(occurred)).total_seconds()
        for occurred, settled in rows
    ]


def _exact(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


@dataclass
class BillingSample:
    """One scrape of every billing replica, summed: cumulative bucket counts by upper
    bound (inf last), settled events, and when it was taken."""

    buckets: dict[float, float] = field(default_factory=dict)
    settled: float = 0.0
    at: float = 0.0


def scrape(urls: list[str]) -> BillingSample:
    sample = BillingSample(at=time.monotonic())
    for url in urls:
        text = httpx.get(url, timeout=5).text
        for family in text_string_to_metric_families(text):
            for metric in family.samples:
                if metric.name == f"{LAG_METRIC}_bucket":
                    bound = float(metric.labels["le"])
                    sample.buckets[bound] = sample.buckets.get(bound, 0.0) + metric.value
                elif metric.name == SETTLED_METRIC and metric.labels.get("result") == "settled":
                    sample.settled += metric.value
    return sample


def quantile(buckets: dict[float, float], share: float) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets: linear within the bucket the
    quantile falls in (from 0 for the first); None without observations; the highest finite
    bound when it falls in +Inf."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = share * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return bounds[-1]


def bucket_of(buckets: dict[float, float], share: float) -> tuple[float, float]:
    """The (lower, upper] bucket bounds the quantile falls in: what the histogram can say."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    lower = 0.0
    for bound in bounds:
        if buckets[bound] >= share * total:
            return lower, bound
        lower = bound
    return lower, math.inf


def window(before: BillingSample, after: BillingSample, lags: list[float]) -> dict[str, Any]:
    """The settlement figures of what happened between two scrapes: exact quantiles from
    the control DB when it could be read (`lags`), else the histogram's estimate."""
    buckets = {b: after.buckets.get(b, 0.0) - before.buckets.get(b, 0.0) for b in after.buckets}
    settled = after.settled - before.settled
    p99_bucket = bucket_of(buckets, 0.99)
    return {
        "events": settled,
        "seconds": after.at - before.at,
        "source": "settlements table" if lags else "histogram",
        "lag_p50_s": _exact(lags, 0.5) if lags else quantile(buckets, 0.5),
        "lag_p99_s": _exact(lags, 0.99) if lags else quantile(buckets, 0.99),
        "lag_max_s": max(lags) if lags else None,
        "histogram_p99_s": quantile(buckets, 0.99),
        "histogram_p99_bucket_s": [
            p99_bucket[0],
            None if math.isinf(p99_bucket[1]) else p99_bucket[1],
        ],
    }


def wait_settled(
    urls: list[str], target: float, *, poll_s: float = 0.1, settle_s: float = 0.5
) -> tuple[BillingSample, list[BillingSample]]:
    """Scrapes until at least `target` events are settled and the count has then not moved
    for `settle_s` (calls oha abandoned at its deadline still finish and are billed, so
    there may be more than it counted), or until it stops moving for QUIET_S short of it.
    Returns the last scrape and every scrape at which the count had moved."""
    deadline = time.monotonic() + SETTLE_WAIT_S
    sample = scrape(urls)
    moves: list[BillingSample] = []
    moved_at, last = sample.at, sample.settled
    while time.monotonic() < deadline:
        still = time.monotonic() - moved_at
        if still > (settle_s if sample.settled >= target else QUIET_S):
            break
        time.sleep(poll_s)
        sample = scrape(urls)
        if sample.settled != last:
            moved_at, last = sample.at, sample.settled
            moves.append(sample)
    return sample, moves


def measured_step(
    billing: Billing, load: Callable[[], Any], ok: Callable[[Any], int]
) -> tuple[Any, dict[str, Any]]:
    """Runs `load` (a result whose `ok(result)` successful calls each make a usage event)
    and returns (result, the settlement figures of its calls)."""
    before, _ = wait_settled(billing.urls, 0)  # earlier steps' last events: out of the window
    mark = settlements_mark(billing.db)
    result = load()
    after, _ = wait_settled(billing.urls, before.settled + ok(result))
    return result, window(before, after, settled_lags(billing.db, mark))


def drain_rate(
    billing: Billing, billing_pids: list[int], load: Callable[[], Any], ok: Callable[[Any], int]
) -> dict[str, Any]:
    """Billing's settling capacity: billing is stopped (SIGSTOP) while `load` piles its
    usage events up in Kafka, then resumed; events / seconds from the resume to the last of
    them settled. Nothing else runs meanwhile, so billing has its CPU to itself."""
    before, _ = wait_settled(billing.urls, 0)
    for pid in billing_pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        result = load()
    finally:
        resumed = time.monotonic()
        for pid in billing_pids:
            os.kill(pid, signal.SIGCONT)
    backlog = ok(result)
    sample, moves = wait_settled(billing.urls, before.settled + backlog, poll_s=0.02, settle_s=1.0)
    settled = sample.settled - before.settled
    seconds = moves[-1].at - resumed if moves else 0.0
    # From the first batch seen settled to the last: without the fixed wait before the
    # first (the consumer's next fetch, up to AIG_BILLING_BATCH_WAIT_MS, or its rejoin).
    steady = (
        (moves[-1].settled - moves[0].settled) / (moves[-1].at - moves[0].at)
        if len(moves) > 1 and moves[-1].at > moves[0].at
        else None
    )
    return {
        "backlog": backlog,
        "settled": settled,
        "seconds": seconds,
        "events_per_s": settled / seconds if seconds > 0 else None,
        "first_batch_after_s": moves[0].at - resumed if moves else None,
        "steady_events_per_s": steady,
        "complete": settled >= backlog,
    }
