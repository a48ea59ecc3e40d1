"""Issue 4's benchmark: what admission (the spend reservation) costs per call.

Admission is one transaction on the control DB. Its latency is reported against a baseline
measured in the same run on the same database: one `SELECT 1` transaction, the cheapest
possible round trip. python -m bench.reservations
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from unittest import mock

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from catalog.live import LiveCatalog
from catalog.models import load_catalog
from controldb import AuthenticatedKey, KeyStore, create_engine_from_url, group_commit, migrate
from controldb.limits import Limits
from controldb.money import Admission, Money
from controldb.ratelimit import MAX_RPM_LIMIT
from edge.admission import Admissions
from edge.reservation_pool import ReservationPool

from .run import CALL_BODY

CALLS = 2000
# Calls of one account in flight while settlement trails admission at a gateway's peak (a
# second or so of calls): admission sums the account's live reservations.
IN_FLIGHT = 500
OUT = Path(__file__).parent / "out" / "reservations.json"
# Another writer on the SQLite file (billing settling a batch, a webhooks claim): it holds
# the write lock for a time drawn evenly from HOLD_S, then leaves it free for FREE_S.
HOLD_S = (0.001, 0.015)
FREE_S = 0.022
# Rounds of each way of waiting, alternated, so both meet the same machine.
ROUNDS = 8
# Admission with and without reservations admitted ahead: calls of each way, in rounds
# alternating the two, one call every AHEAD_PAUSE_S (the default bench's 50 calls/s).
AHEAD_CALLS = 400
AHEAD_ROUNDS = 8
AHEAD_PAUSE_S = 0.02


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1),
    }


async def _timed(
    calls: int,
    operation: Callable[[], Awaitable[Any]],
    after: Callable[[Any], Awaitable[None]] | None = None,
) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await operation()
        samples.append(time.perf_counter() - started)
        if after is not None:
            await after(result)  # untimed: settlement happens off the hot path, in billing
    return samples


async def _funded(
    database_url: str, name: str
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession], KeyStore, Money, str, str]:
    """A migrated control DB with one account no benchmark can exhaust and one key: the
    engine, sessions, key store, money, account id and key id."""
    await migrate(database_url)
    engine: AsyncEngine = create_engine_from_url(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = KeyStore(sessions, b"bench-pepper")
    money = Money(sessions)
    account = await store.create_account(name)
    key, _ = await store.create_key(account.id, name)
    await money.add_credits(account.id, "grant", 10**15)
    return engine, sessions, store, money, account.id, key.id


async def measure(database_url: str, calls: int = CALLS) -> dict[str, Any]:
    engine, sessions, store, money, account_id, key_id = await _funded(database_url, "bench")
    # A key with an rpm_limit pays one UPDATE more per admission; the limit is never reached.
    limited, _ = await store.create_key(account_id, "bench-rpm")
    await Limits(sessions).set_caps("key", limited.id, {"rpm_limit": MAX_RPM_LIMIT})

    async def round_trip() -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("SELECT 1"))

    async def admit() -> Admission:
        return await money.admit(account_id, key_id, 1000)

    async def admit_limited() -> Admission:
        return await money.admit(account_id, limited.id, 1000)

    async def settle(admission: Admission) -> None:
        await money.release(admission.reservation_id)

    await _timed(100, round_trip)  # warm the pool and the caches
    baseline = _percentiles(await _timed(calls, round_trip))
    # Steady state: calls settle, so few reservations are in flight at any time.
    admission = _percentiles(await _timed(calls, admit, settle))
    limited_admission = _percentiles(await _timed(calls, admit_limited, settle))
    in_flight = [await admit() for _ in range(IN_FLIGHT)]

    async def settle_the_oldest(admission: Admission) -> None:
        in_flight.append(admission)
        await settle(in_flight.pop(0))

    crowded = _percentiles(await _timed(calls // 2, admit, settle_the_oldest))
    await engine.dispose()
    return {
        "calls": calls,
        "baseline_select_1": baseline,
        "admission": admission,
        "admission_over_baseline_p50": round(admission["p50_us"] / baseline["p50_us"], 2),
        "admission_over_baseline_p99": round(admission["p99_us"] / baseline["p99_us"], 2),
        f"admission_{IN_FLIGHT}_in_flight": crowded,
        "in_flight_over_admission_p50": round(crowded["p50_us"] / admission["p50_us"], 2),
        "admission_rpm_limited_key": limited_admission,
        "rpm_limited_over_unlimited_p50": round(
            limited_admission["p50_us"] / admission["p50_us"], 2
        ),
    }


def _taken_ahead() -> float:
    """How many calls of this process have taken a reservation admitted ahead of them."""
    taken = REGISTRY.get_sample_value("aig_edge_reserved_ahead_total", {"outcome": "taken"})
    return taken or 0.0


async def measure_ahead(
    database_url: str, calls: int = AHEAD_CALLS, rounds: int = AHEAD_ROUNDS
) -> dict[str, Any]:
    """A busy key's admission as the edge runs it (`edge.admission.Admissions.chat`, the
    worst-case estimate included), one call every AHEAD_PAUSE_S as at the default bench's 50
    calls/s: with every call admitting on its own, against calls taking the reservation
    admitted ahead of them (edge/reservation_pool.py), in alternating rounds. Each call's
    reservation is released after it (its settlement, untimed) before the pause, so the
    next call meets a loop that idled, as a call at 50/s does."""
    engine, _, _, money, account_id, key_id = await _funded(database_url, "bench-ahead")
    catalog = LiveCatalog.fixed(load_catalog())
    pool = ReservationPool(money)
    ways = {"own": Admissions(catalog, money), "ahead": Admissions(catalog, money, pool=pool)}
    key = AuthenticatedKey(key_id=key_id, key_name="b", account_id=account_id, account_name="b")
    samples: dict[str, list[float]] = {name: [] for name in ways}
    taken_before = _taken_ahead()
    for _ in range(rounds):
        for name, admissions in ways.items():
            for _ in range(calls // rounds):
                started = time.perf_counter()
                admitted = await admissions.chat(key, CALL_BODY)
                samples[name].append(time.perf_counter() - started)
                await money.release(admitted.admission.reservation_id)
                await asyncio.sleep(AHEAD_PAUSE_S)  # the refill runs meanwhile
    taken = _taken_ahead() - taken_before
    await pool.aclose()
    await money.aclose()
    await engine.dispose()
    own, ahead = _percentiles(samples["own"]), _percentiles(samples["ahead"])
    return {
        "calls_each": calls,
        "pause_ms": AHEAD_PAUSE_S * 1000,
        "own": own,
        "ahead": ahead,
        "ahead_taken_share": round(taken / len(samples["ahead"]), 3),
        "ahead_over_own_p50": round(ahead["p50_us"] / own["p50_us"], 2),
    }


async def measure_lock_wait(database_url: str, round_s: float = 1.5) -> dict[str, Any]:
    """SQLite only: admission while another connection holds the write lock HOLD_S out of
    every HOLD_S + FREE_S (hold times from a seeded draw), admissions arriving at random
    moments for `round_s` seconds ROUNDS times per way of waiting. The writer thread polls for the
    lock (controldb.engine.begin_polling); the baseline, measured alternately in the same run,
    is SQLite's own busy handler (BEGIN IMMEDIATE under the 5 s busy timeout), whose sleeps
    grow 1, 2, 5, 10 ms …"""
    engine, _, _, money, account_id, key_id = await _funded(database_url, "bench-lock")
    stop = threading.Event()
    draw = random.Random(16)

    def hold_the_lock_now_and_then() -> None:
        holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
        holder.execute("PRAGMA busy_timeout=5000")
        while not stop.is_set():
            holder.execute("BEGIN IMMEDIATE")
            time.sleep(draw.uniform(*HOLD_S))
            holder.execute("COMMIT")
            time.sleep(FREE_S)
        holder.close()

    async def admissions_for(seconds: float) -> list[float]:
        """Admissions (each released, untimed) at random moments for `seconds`, so they meet
        the holder at every phase of its cycle."""
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(arrivals.uniform(0, 0.004))
            started = time.perf_counter()
            admission = await money.admit(account_id, key_id, 1000)
            samples.append(time.perf_counter() - started)
            await money.release(admission.reservation_id)
        return samples

    def busy_handler_begin(connection: Any) -> None:
        connection.execute("BEGIN IMMEDIATE")  # the connection's 5 s busy timeout waits

    arrivals = random.Random(4)
    samples: dict[str, list[float]] = {"polling": [], "busy_handler": []}
    holder = threading.Thread(target=hold_the_lock_now_and_then, daemon=True)
    holder.start()
    try:
        for _ in range(ROUNDS):
            for name in ("polling", "busy_handler"):
                waiting = (
                    mock.patch.object(group_commit, "begin_polling", busy_handler_begin)
                    if name == "busy_handler"
                    else contextlib.nullcontext()
                )
                with waiting:
                    samples[name] += await admissions_for(round_s)
    finally:
        stop.set()
        holder.join()
        await money.aclose()
        await engine.dispose()
    polling, busy = _percentiles(samples["polling"]), _percentiles(samples["busy_handler"])
    return {
        "calls": {name: len(taken) for name, taken in samples.items()},
        "hold_ms": [bound * 1000 for bound in HOLD_S],
        "free_ms": FREE_S * 1000,
        "polling": polling,
        "busy_handler": busy,
        "polling_over_busy_handler_p50": round(polling["p50_us"] / busy["p50_us"], 2),
        "polling_over_busy_handler_p99": round(polling["p99_us"] / busy["p99_us"], 2),
    }


def main() -> None:
    from tests.pg import PostgresServer  # the project's throwaway PostgreSQL

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        results["sqlite"] = asyncio.run(measure(f"sqlite+aiosqlite:///{directory}/bench.db"))
        results["sqlite_lock_wait"] = asyncio.run(
            measure_lock_wait(f"sqlite+aiosqlite:///{directory}/lock.db")
        )
        results["sqlite_ahead"] = asyncio.run(
            measure_ahead(f"sqlite+aiosqlite:///{directory}/ahead.db")
        )
    postgres = PostgresServer.start()
    try:
        results["postgresql"] = asyncio.run(measure(postgres.url()))
    finally:
        postgres.stop()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
