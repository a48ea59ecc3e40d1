"""The analytics queries, written once; both backends run exactly this text.

Exact reads before merges: every query reads `usage_events FINAL`. ReplacingMergeTree
removes a redelivered copy only when a background merge happens to combine the two parts,
which may be minutes away or never; FINAL collapses copies at read time, so a
redelivered event counts once in the very next query. Why FINAL and not the alternatives:
- `argMax(..., inserted_at) GROUP BY event_id` needs a subquery per aggregate and a hash
  table of every event id in the range — more SQL and more memory for the same answer.
- `LIMIT 1 BY event_id` has to sort or hash the whole range by event id as well.
- FINAL merges only the primary-key ranges the WHERE clause selects (one account, one
  time range), in parallel, and since duplicates share a partition (its key is derived
  from `occurred_at`, which is part of the sorting key) ClickHouse never needs to merge
  across partitions for it.

Values are bound server-side (`{name:Type}` placeholders), never spliced into the SQL.
"""

from __future__ import annotations

from .schema import TABLE

TIME = "DateTime64(3, 'UTC')"

# group_by value -> (SQL expression, output column)
GROUPINGS: dict[str, tuple[str, str]] = {
    "model": ("model", "model"),
    "key": ("key_id", "key_id"),
    # A date as text: both backends then return the same JSON string, not a date type.
    "day": ("toString(toDate(occurred_at))", "day"),
}

_SUMMARY_COLUMNS = """
    count() AS calls,
    countIf(outcome = 'succeeded') AS succeeded,
    countIf(outcome = 'failed') AS failed,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(cached_prompt_tokens) AS cached_prompt_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cache_write_prompt_tokens) AS cache_write_prompt_tokens,
    sum(cache_write_1h_prompt_tokens) AS cache_write_1h_prompt_tokens,
    sum(upstream_cost_nano_usd) AS upstream_cost_nano_usd,
    sum(billed_cost_nano_usd) AS billed_cost_nano_usd,
    -- Upstream attempts that did not serve the call (failover), all at no cost.
    sum(greatest(toInt64(JSONLength(attempts)) - toInt64(outcome = 'succeeded'), 0))
        AS failed_attempts
"""


def usage_summary_sql(group_by: str) -> str:
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}, not {group_by!r}")
    expression, name = GROUPINGS[group_by]
    return f"""
        SELECT {expression} AS {name}, {_SUMMARY_COLUMNS}
        FROM {TABLE} FINAL
        WHERE account_id = {{account_id:String}}
          AND occurred_at >= {{start:{TIME}}} AND occurred_at < {{end:{TIME}}}
        GROUP BY {name}
        ORDER BY {name}
    """


CALL_FILTERS = ("model", "key_id", "outcome")


def recent_calls_sql(filters: tuple[str, ...]) -> str:
    """One account's calls in [start, end), newest first, optionally narrowed to a model,
    a key or an outcome (each an exact match bound as a parameter)."""
    unknown = set(filters) - set(CALL_FILTERS)
    if unknown:
        raise ValueError(f"unknown call filters: {sorted(unknown)}")
    narrowing = "".join(f" AND {name} = {{{name}:String}}" for name in filters)
    return f"""
        SELECT formatDateTime(occurred_at, '%Y-%m-%dT%H:%i:%SZ', 'UTC') AS time,
               toString(event_id) AS event_id, request_id, key_id, workspace_id, endpoint,
               model, provider,
               toString(outcome) AS outcome, http_status, error_code,
               prompt_tokens, completion_tokens, billed_cost_nano_usd, latency_ms, streamed,
               toUInt32(JSONLength(attempts)) AS attempts
        FROM {TABLE} FINAL
        WHERE account_id = {{account_id:String}}
          AND occurred_at >= {{start:{TIME}}} AND occurred_at < {{end:{TIME}}}{narrowing}
        ORDER BY occurred_at DESC, event_id
        LIMIT {{limit:UInt32}}
    """


def rolling_spend_sql(*, one_account: bool) -> str:
    # Failed calls are stored with zero cost already; the outcome filter says the rule
    # (docs/design.md: failed calls do not count toward the tier) where the tier job reads it.
    account_filter = "AND account_id = {account_id:String}" if one_account else ""
    return f"""
        SELECT account_id, sum(billed_cost_nano_usd) AS spend_nano_usd
        FROM {TABLE} FINAL
        WHERE outcome = 'succeeded' AND occurred_at >= {{since:{TIME}}} {account_filter}
        GROUP BY account_id
    """


def count_events_sql(*, account: bool, start: bool, end: bool, outcome: bool) -> str:
    conditions = ["1"]
    if account:
        conditions.append("account_id = {account_id:String}")
    if start:
        conditions.append(f"occurred_at >= {{start:{TIME}}}")
    if end:
        conditions.append(f"occurred_at < {{end:{TIME}}}")
    if outcome:
        conditions.append("outcome = {outcome:String}")
    return f"SELECT count() AS events FROM {TABLE} FINAL WHERE {' AND '.join(conditions)}"
