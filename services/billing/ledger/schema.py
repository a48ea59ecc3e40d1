"""The usage ledger's ClickHouse schema: the same SQL text for chDB and a ClickHouse server.

One row per UsageEvent.

- `ReplacingMergeTree(inserted_at)` with `ORDER BY (account_id, occurred_at, event_id)`: a
  redelivered event has the same sorting key, so merges keep one copy (the last inserted).
  A producer sets `occurred_at` once per event id, so copies never differ in the key.
- `PARTITION BY toYYYYMM(occurred_at)`: old months are cheap to drop, move or back up,
  and copies of one event always land in the same partition.
- The sorting key starts with `account_id`, then time: every analytics query is "one
  account, a time range", which becomes one narrow range of the primary index.
- Money is Int64 nano-USD; tokens are UInt64. Nothing here is a float.
- `attempts` is a JSON array in a String: it is read per call (support, audits), never
  aggregated, so a Nested column would cost more in writes than it saves.

How reads stay exact before merges run: see queries.py.
"""

from __future__ import annotations

DATABASE = "aig"
TABLE = f"{DATABASE}.usage_events"
MIGRATIONS_TABLE = f"{DATABASE}.schema_migrations"

# Applied in order, once each; the version is recorded in aig.schema_migrations.
# Append new versions; never edit one that has shipped.
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
    (
        # "What happened to request X?" comes from support without an account id; a bloom
        # filter lets that lookup skip most granules instead of reading every account.
        2,
        f"""
        ALTER TABLE {TABLE}
            ADD INDEX IF NOT EXISTS request_id_bloom request_id TYPE bloom_filter GRANULARITY 4
        """,
    ),
    (
        # Media tasks are priced per unit (image, second of video, ...), not per token.
        3,
        f"""
        ALTER TABLE {TABLE}
            ADD COLUMN IF NOT EXISTS unit LowCardinality(String) DEFAULT '',
            ADD COLUMN IF NOT EXISTS units UInt64 DEFAULT 0,
            ADD COLUMN IF NOT EXISTS unit_price_nano_usd Int64 DEFAULT 0
        """,
    ),
    (
        # Prompt tokens written to a provider's prompt cache cost more than input (Anthropic:
        # 1.25x for 5-minute entries, 2x for 1-hour ones); part of prompt_tokens.
        4,
        f"""
        ALTER TABLE {TABLE}
            ADD COLUMN IF NOT EXISTS cache_write_prompt_tokens UInt64 DEFAULT 0,
            ADD COLUMN IF NOT EXISTS cache_write_1h_prompt_tokens UInt64 DEFAULT 0
        """,
    ),
)

# Run before the migrations, on every start; each statement is idempotent.
BOOTSTRAP: tuple[str, ...] = (
    f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
    f"""
    CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
        version UInt32,
        applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = MergeTree ORDER BY version
    """,
)
