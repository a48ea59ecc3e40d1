"""Rows per second of batch inserts into the embedded (chDB) usage ledger.

`python -m bench.ledger_insert [--rows 200000] [--batch 1000]`: inserts synthetic usage rows
in batches the size the billing consumer uses, into a fresh ledger in a temporary
directory, then reads them back with the tier query to show that FINAL reads stay fast.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aig.events.v1 import events_pb2 as events
from aig_common.ids import uuid7
from billing.ledger import ChdbLedger, UsageRow

MODELS = ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash")


def synthetic_rows(count: int, accounts: int) -> list[UsageRow]:
    start = datetime.now(UTC) - timedelta(days=20)
    rows = []
    for index in range(count):
        event = events.UsageEvent(
            event_id=str(uuid7()),
            occurred_at_ms=int((start + timedelta(seconds=index)).timestamp() * 1000),
            request_id=f"req_{index}",
            account_id=f"acct_{index % accounts}",
            key_id=f"key_{index % (accounts * 3)}",
            endpoint="chat.completions",
            model=MODELS[index % len(MODELS)],
            provider="openai",
            outcome=events.CALL_OUTCOME_SUCCEEDED if index % 20 else events.CALL_OUTCOME_FAILED,
            http_status=200 if index % 20 else 503,
            prompt_tokens=400 + index % 300,
            completion_tokens=120 + index % 90,
            upstream_cost_nano_usd=150_000 + index % 1000,
            markup_basis_points=4000,
            billed_cost_nano_usd=210_000 + index % 1000,
            latency_ms=300,
        )
        event.attempts.append(events.Attempt(provider="openai", upstream_model="m", status=200))
        rows.append(UsageRow.from_event(event))
    return rows


async def run(total: int, batch: int, accounts: int) -> None:
    rows = synthetic_rows(total, accounts)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as directory:
        ledger = ChdbLedger(Path(directory) / "ledger")
        await ledger.migrate()
        began = time.perf_counter()
        for offset in range(0, total, batch):
            await ledger.insert(rows[offset : offset + batch])
        insert_s = time.perf_counter() - began
        began = time.perf_counter()
        spend = await ledger.rolling_spend_nano_usd(since=datetime.now(UTC) - timedelta(days=30))
        tier_s = time.perf_counter() - began
        await ledger.close()
    print(
        f"inserted {total} rows in batches of {batch}: {insert_s:.2f} s, "
        f"{total / insert_s:,.0f} rows/s ({insert_s / (total / batch) * 1000:.1f} ms per batch)"
    )
    print(f"tier query over {len(spend)} accounts (FINAL): {tier_s * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.batch, args.accounts))


if __name__ == "__main__":
    main()
