"""The usage ledger's ClickHouse schema: the same SQL for chDB and a ClickHouse server.

One row per UsageEvent. ReplacingMergeTree keyed on (account_id, occurred_at, event_id)
collapses a redelivered event; queries read with FINAL so an answer is exact even before
background merges have run. Monthly partitions keep old months cheap to drop or move, and
the sort key makes per-account time ranges (every analytics query) a narrow scan.
"""

from __future__ import annotations

DATABASE = "aig"
TABLE = f"{DATABASE}.usage_events"

# Applied in order, once each; the version is recorded in aig.schema_migrations.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            event_id UUID,
            occurred_at DateTime64(3, 'UTC'),
            request_id String,
            account_id String,
            key_id String,
            workspace_id String,
            endpoint LowCardinality(String),
            model LowCardinality(String),
            provider LowCardinality(String),
            outcome Enum8('succeeded' = 1, 'failed' = 2),
            http_status UInt16,
            error_code LowCardinality(String),
            prompt_tokens UInt64,
            completion_tokens UInt64,
            cached_prompt_tokens UInt64,
            reasoning_tokens UInt64,
            upstream_cost_nano_usd Int64,
            markup_basis_points UInt32,
            billed_cost_nano_usd Int64,
            latency_ms UInt32,
            streamed Bool,
            attempts String,
            reservation_id String,
            inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
        )
        ENGINE = ReplacingMergeTree(inserted_at)
        PARTITION BY toYYYYMM(occurred_at)
        ORDER BY (account_id, occurred_at, event_id)
        """,
    ),
)

BOOTSTRAP = (
    f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
    f"""
    CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations (
        version UInt32,
        applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = MergeTree ORDER BY version
    """,
)
