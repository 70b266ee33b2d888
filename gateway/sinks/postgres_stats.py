"""The PostgreSQL store's stats facts (schema 6): what SQLite's triggers keep (sqlite_db.py), here
kept without a hot row.

Each event write keeps its message's facts in `messages` (STORE_BATCH). Statement triggers on
`messages` then append what changed to two delta tables: plain inserts, which replicas writing at
once never wait on each other for. (Counters updated in place would be a row every batch locks,
in a different order each time: waits, and deadlocks.) One replica at a time folds the deltas into
the rollups every second (PostgresSink); a figure reads the rollups plus the deltas not folded yet,
so it is exact at once.
"""

from __future__ import annotations

from gateway.sinks.sql import first_times
from gateway.stats import BUCKETS

KEY = "provider, endpoint, country, period"
# Seconds from the first sent-or-earlier to the first delivered: the provider's times where both
# exist, else ours; rounded as gateway/stats.py's BUCKETS say (the same as SQLite's).
_ROUNDED = "".join(f" WHEN s < {limit} THEN s / {step} * {step}" for limit, step in BUCKETS)
SECONDS_FUNCTION = f"""
CREATE FUNCTION status_gateway_seconds(done_occ text, start_occ text, done_rcv text, start_rcv text)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN s IS NULL THEN NULL{_ROUNDED} ELSE s / 3600 * 3600 END
    FROM (SELECT CASE WHEN done_rcv IS NULL OR start_rcv IS NULL THEN NULL ELSE greatest(0, round(extract(epoch FROM
        (CASE WHEN done_occ IS NOT NULL AND start_occ IS NOT NULL THEN done_occ ELSE done_rcv END)::timestamptz
        - (CASE WHEN done_occ IS NOT NULL AND start_occ IS NOT NULL THEN start_occ ELSE start_rcv END)::timestamptz
    )))::integer END AS s) AS span
$$"""


def _rows(alias: str, n: int, kind: str) -> str:
    hour = f"substr({alias}.created_at, 1, 13)"
    key = f"{alias}.provider, {alias}.endpoint, {alias}.country, {hour}"
    if kind == "count":
        return f"SELECT {key}, {alias}.status, {alias}.reason, {n}"
    return (f"SELECT {key}, status_gateway_seconds({alias}.done_occ, {alias}.start_occ, {alias}.done_rcv,"
            f" {alias}.start_rcv), {n}")


def _seconds(alias: str) -> str:
    return f"status_gateway_seconds({alias}.done_occ, {alias}.start_occ, {alias}.done_rcv, {alias}.start_rcv)"


INSERTED = f"""
CREATE FUNCTION status_gateway_messages_inserted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO stats_count_deltas {_rows("n", 1, "count")} FROM new_rows n WHERE n.status <> 'received';
    INSERT INTO stats_time_deltas {_rows("n", 1, "time")} FROM new_rows n
        WHERE n.status <> 'received' AND {_seconds("n")} IS NOT NULL;
    RETURN NULL;
END $$"""
UPDATED = f"""
CREATE FUNCTION status_gateway_messages_updated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO stats_count_deltas
        {_rows("o", -1, "count")} FROM old_rows o JOIN new_rows n USING (provider, message_id)
            WHERE o.status <> 'received' AND (o.status, o.reason) IS DISTINCT FROM (n.status, n.reason)
        UNION ALL
        {_rows("n", 1, "count")} FROM old_rows o JOIN new_rows n USING (provider, message_id)
            WHERE n.status <> 'received' AND (o.status, o.reason) IS DISTINCT FROM (n.status, n.reason);
    INSERT INTO stats_time_deltas
        {_rows("o", -1, "time")} FROM old_rows o JOIN new_rows n USING (provider, message_id)
            WHERE o.status <> 'received' AND {_seconds("o")} IS NOT NULL
              AND {_seconds("o")} IS DISTINCT FROM {_seconds("n")}
        UNION ALL
        {_rows("n", 1, "time")} FROM old_rows o JOIN new_rows n USING (provider, message_id)
            WHERE n.status <> 'received' AND {_seconds("n")} IS NOT NULL
              AND {_seconds("o")} IS DISTINCT FROM {_seconds("n")};
    RETURN NULL;
END $$"""

FACT_COLUMNS = ("endpoint text NOT NULL DEFAULT ''", "country text NOT NULL DEFAULT 'unknown'",
                "created_at text NOT NULL DEFAULT ''", "status text NOT NULL DEFAULT ''",
                "reason text NOT NULL DEFAULT ''", "start_occ text", "start_rcv text", "done_occ text", "done_rcv text")

# Before the country of the messages stored before is known (PostgresSink fills it in between).
FACTS = [
    *[f"ALTER TABLE messages ADD COLUMN {column}" for column in FACT_COLUMNS],
    f"""UPDATE messages m SET endpoint = coalesce(e.body::json->>'endpoint', ''), status = e.status,
        reason = coalesce(e.reason, ''), created_at = f.created_at, start_occ = f.start_occ,
        start_rcv = f.start_rcv, done_occ = f.done_occ, done_rcv = f.done_rcv
    FROM events e, (SELECT provider, message_id, min(received_at) AS created_at, {first_times()}
        FROM events GROUP BY provider, message_id) AS f
    WHERE e.id = m.event_id AND f.provider = m.provider AND f.message_id = m.message_id""",
]
# The `to` of each message stored before, for its country (phonenumbers runs in Python).
TO_OF_MESSAGES = ("SELECT m.provider, m.message_id, e.body::json->>'to' FROM messages m JOIN events e"
                  " ON e.id = m.event_id")
SET_COUNTRY = "UPDATE messages SET country = $3 WHERE provider = $1 AND message_id = $2"

def _rollups() -> list[str]:
    statements = []
    for suffix, n in (("", 13), ("_daily", 10)):  # by hour, and by day (gateway/stats.py, Window.pieces)
        counts, times = f"stats_counts{suffix}", f"stats_times{suffix}"
        period = f"substr(created_at, 1, {n})"
        statements += [
            f"""CREATE TABLE {counts} ({KEY.replace(",", " text NOT NULL,")} text NOT NULL, status text NOT NULL,
                reason text NOT NULL, n bigint NOT NULL, PRIMARY KEY ({KEY}, status, reason))""",
            f"""CREATE TABLE {times} ({KEY.replace(",", " text NOT NULL,")} text NOT NULL, seconds integer NOT NULL,
                n bigint NOT NULL, PRIMARY KEY ({KEY}, seconds))""",
            f"CREATE INDEX {counts}_by_period ON {counts} (period)",
            f"CREATE INDEX {times}_by_period ON {times} (period)",
            f"""INSERT INTO {counts} SELECT {KEY}, status, reason, count(*) FROM
                (SELECT provider, endpoint, country, {period} AS period, status, reason FROM messages
                 WHERE status <> 'received') AS m GROUP BY {KEY}, status, reason""",
            f"""INSERT INTO {times} SELECT {KEY}, seconds, count(*) FROM
                (SELECT provider, endpoint, country, {period} AS period, {_seconds("messages")} AS seconds
                 FROM messages WHERE status <> 'received') AS m WHERE seconds IS NOT NULL GROUP BY {KEY}, seconds""",
        ]
    return statements


ROLLUPS = [
    SECONDS_FUNCTION,
    *_rollups(),
    # Deltas by hour; the fold adds each to its hour and to its day.
    "CREATE TABLE stats_count_deltas (LIKE stats_counts)",
    "CREATE TABLE stats_time_deltas (LIKE stats_times)",
    INSERTED,
    UPDATED,
    """CREATE TRIGGER messages_inserted AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION status_gateway_messages_inserted()""",
    """CREATE TRIGGER messages_updated AFTER UPDATE ON messages REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION status_gateway_messages_updated()""",
    "CREATE INDEX events_by_status ON events (status, seq)",
    "CREATE INDEX events_by_provider ON events (provider, seq)",
    "CREATE INDEX events_by_time ON events (received_at)",
]


def _fold(kind: str, columns: str) -> str:
    deltas = "stats_count_deltas" if kind == "counts" else "stats_time_deltas"
    return f"""WITH d AS (DELETE FROM {deltas} RETURNING *), hourly AS (
        INSERT INTO stats_{kind} SELECT {KEY}, {columns}, sum(n) FROM d GROUP BY {KEY}, {columns}
            ORDER BY {KEY}, {columns}
        ON CONFLICT ({KEY}, {columns}) DO UPDATE SET n = stats_{kind}.n + excluded.n)
    INSERT INTO stats_{kind}_daily SELECT provider, endpoint, country, substr(period, 1, 10), {columns}, sum(n) FROM d
        GROUP BY 1, 2, 3, 4, {columns} ORDER BY 1, 2, 3, 4, {columns}
    ON CONFLICT ({KEY}, {columns}) DO UPDATE SET n = stats_{kind}_daily.n + excluded.n"""


# Folded in key order, so two folds could never wait on each other crosswise (one runs at a time
# anyway: FOLD_LOCK).
FOLD = [_fold("counts", "status, reason"), _fold("times", "seconds")]
FOLD_LOCK = 0x5354_4746  # pg_try_advisory_xact_lock key: one replica folds at a time


def rollup(kind: str, grain: str) -> str:
    """A rollup with the deltas not folded into it yet (by day: the deltas' hours cut to days)."""
    deltas = "stats_count_deltas" if kind == "counts" else "stats_time_deltas"
    columns = "status, reason, n" if kind == "counts" else "seconds, n"
    if grain == "day":
        return (f"(SELECT provider, endpoint, country, period, {columns} FROM stats_{kind}_daily UNION ALL"
                f" SELECT provider, endpoint, country, substr(period, 1, 10), {columns} FROM {deltas}) AS r")
    return (f"(SELECT provider, endpoint, country, period, {columns} FROM stats_{kind} UNION ALL"
            f" SELECT provider, endpoint, country, period, {columns} FROM {deltas}) AS r")
