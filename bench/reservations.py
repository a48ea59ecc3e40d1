"""Issue 4's benchmark: what admission (the spend reservation) costs per call.

Admission is one transaction on the control DB. Its latency is reported against a baseline
measured in the same run on the same database: one `SELECT 1` transaction, the cheapest
possible round trip. python -m bench.reservations
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from controldb import KeyStore, create_engine_from_url, migrate
from controldb.limits import Limits
from controldb.money import Admission, Money
from controldb.ratelimit import MAX_RPM_LIMIT

CALLS = 2000
# Calls of one account in flight while settlement trails admission at a gateway's peak (a
# second or so of calls): admission sums the account's live reservations.
IN_FLIGHT = 500
OUT = Path(__file__).parent / "out" / "reservations.json"


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


async def measure(database_url: str, calls: int = CALLS) -> dict[str, Any]:
    await migrate(database_url)
    engine: AsyncEngine = create_engine_from_url(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = KeyStore(sessions, b"bench-pepper")
    money = Money(sessions)
    account = await store.create_account("bench")
    key, _ = await store.create_key(account.id, "bench")
    await money.add_credits(account.id, "grant", 10**15)
    # A key with an rpm_limit pays one UPDATE more per admission; the limit is never reached.
    limited, _ = await store.create_key(account.id, "bench-rpm")
    await Limits(sessions).set_caps("key", limited.id, {"rpm_limit": MAX_RPM_LIMIT})

    async def round_trip() -> None:
        async with sessions() as session, session.begin():
            await session.execute(text("SELECT 1"))

    async def admit() -> Admission:
        return await money.admit(account.id, key.id, 1000)

    async def admit_limited() -> Admission:
        return await money.admit(account.id, limited.id, 1000)

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


def main() -> None:
    from tests.pg import PostgresServer  # the project's throwaway PostgreSQL

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        results["sqlite"] = asyncio.run(measure(f"sqlite+aiosqlite:///{directory}/bench.db"))
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
