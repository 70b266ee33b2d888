"""The SQLite store's schema and its two writes, as plain synchronous functions.

Used by the writer process (sqlite_writer.py), which does every event write, and by SQLiteSink
for start-up migration, readiness and reads.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.country import country_of
from gateway.model import Status
from gateway.sinks.base import Rows, rows_by_table
from gateway.sinks.sql import first_occurrences, first_times
from gateway.stats import BUCKETS

# --- the stats' facts (schema 6) ------------------------------------------------------------------
# A message's row in `messages` keeps, besides its current status, what /v1/stats needs: endpoint,
# country and first-seen time (from its first event), its current status and reason, and the
# first sent-or-earlier and first delivered times (provider's and ours). Triggers on that row keep
# the rollups: messages by (provider, endpoint, country, hour first seen, status, reason), and
# times to deliver by the same keys and whole seconds (so a 24 h or all-time figure reads a few
# thousand rows, never the events). Inbound messages (status received) are not counted.
_FIRST = "CASE WHEN excluded.{c} IS NOT NULL AND (messages.{c} IS NULL OR excluded.{c} < messages.{c})" \
         " THEN excluded.{c} ELSE messages.{c} END"
_GREATER = ("(excluded.rank, excluded.occurred_at, excluded.received_at)"
            " > (messages.rank, messages.occurred_at, messages.received_at)")
MOVE_CURRENT = f"""CREATE TRIGGER events_move_current AFTER INSERT ON events BEGIN
    INSERT INTO messages (provider, message_id, rank, occurred_at, received_at, event_id, endpoint, country,
                          created_at, status, reason, start_occ, start_rcv, done_occ, done_rcv)
    VALUES (NEW.provider, NEW.message_id, NEW.rank, NEW.occurred_at, NEW.received_at, NEW.id,
            coalesce(NEW.endpoint, ''), coalesce(NEW.country, 'unknown'), NEW.received_at, NEW.status,
            coalesce(NEW.reason, ''),
            CASE WHEN NEW.rank BETWEEN 1 AND 3 AND NEW.status != 'received' THEN nullif(NEW.occurred_at, '') END,
            CASE WHEN NEW.rank BETWEEN 1 AND 3 AND NEW.status != 'received' THEN NEW.received_at END,
            CASE WHEN NEW.status = 'delivered' THEN nullif(NEW.occurred_at, '') END,
            CASE WHEN NEW.status = 'delivered' THEN NEW.received_at END)
    ON CONFLICT (provider, message_id) DO UPDATE SET
        {", ".join(f"{c} = CASE WHEN {_GREATER} THEN excluded.{c} ELSE messages.{c} END"
                   for c in ("rank", "occurred_at", "received_at", "event_id", "status", "reason"))},
        {", ".join(f"{c} = {_FIRST.format(c=c)}" for c in ("start_occ", "start_rcv", "done_occ", "done_rcv"))};
END"""
# Seconds from the first sent-or-earlier to the first delivered: the provider's times where both
# exist, else ours; kept to within a few per cent (gateway/stats.py, BUCKETS), so that a day's
# times are a few hundred rows whatever the traffic.
_SPAN = ("max(0, CAST(round((julianday(CASE WHEN {m}.done_occ IS NOT NULL AND {m}.start_occ IS NOT NULL"
         " THEN {m}.done_occ ELSE {m}.done_rcv END) - julianday(CASE WHEN {m}.done_occ IS NOT NULL AND"
         " {m}.start_occ IS NOT NULL THEN {m}.start_occ ELSE {m}.start_rcv END)) * 86400) AS INTEGER))")
SECONDS = ("(CASE WHEN {m}.done_rcv IS NULL OR {m}.start_rcv IS NULL THEN NULL"
           + "".join(f" WHEN {_SPAN} < {limit} THEN {_SPAN} / {step} * {step}" for limit, step in BUCKETS)
           + f" ELSE {_SPAN} / 3600 * 3600 END)")
# Two grains of each rollup: by hour (for a window's first and last day) and by day (the days in
# between, and all time): a figure reads a few thousand rows however long its window.
GRAINS = {"": 13, "_daily": 10}  # table suffix → the length of received_at its period keeps
_KEY = "{m}.provider, {m}.endpoint, {m}.country, substr({m}.created_at, 1, {n})"
_KEY_MATCH = ("provider = {m}.provider AND endpoint = {m}.endpoint AND country = {m}.country"
              " AND period = substr({m}.created_at, 1, {n})")


def _stats_schema() -> list[str]:
    statements = []
    for suffix, n in GRAINS.items():
        counts, times = f"stats_counts{suffix}", f"stats_times{suffix}"
        key, new, old = _KEY.format(m="m", n=n), _KEY.format(m="NEW", n=n), _KEY_MATCH.format(m="OLD", n=n)
        statements += [
            f"""CREATE TABLE {counts} (provider TEXT NOT NULL, endpoint TEXT NOT NULL, country TEXT NOT NULL,
                period TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,
                PRIMARY KEY (provider, endpoint, country, period, status, reason)) WITHOUT ROWID""",
            f"""CREATE TABLE {times} (provider TEXT NOT NULL, endpoint TEXT NOT NULL, country TEXT NOT NULL,
                period TEXT NOT NULL, seconds INTEGER NOT NULL, n INTEGER NOT NULL,
                PRIMARY KEY (provider, endpoint, country, period, seconds)) WITHOUT ROWID""",
            f"CREATE INDEX {counts}_by_period ON {counts} (period)",
            f"CREATE INDEX {times}_by_period ON {times} (period)",
            f"""INSERT INTO {counts} SELECT {key}, m.status, m.reason, count(*) FROM messages m
                WHERE m.status != 'received' GROUP BY 1, 2, 3, 4, 5, 6""",
            f"""INSERT INTO {times} SELECT * FROM (SELECT {key}, {SECONDS.format(m="m")} AS s, count(*)
                FROM messages m WHERE m.status != 'received' GROUP BY 1, 2, 3, 4, 5) WHERE s IS NOT NULL""",
            f"""CREATE TRIGGER messages_count_new{suffix} AFTER INSERT ON messages WHEN NEW.status != 'received' BEGIN
                INSERT INTO {counts} VALUES ({new}, NEW.status, NEW.reason, 1) ON CONFLICT DO UPDATE SET n = n + 1;
            END""",
            f"""CREATE TRIGGER messages_count_moved{suffix} AFTER UPDATE ON messages
                WHEN NEW.status != 'received' AND (OLD.status != NEW.status OR OLD.reason != NEW.reason) BEGIN
                UPDATE {counts} SET n = n - 1 WHERE {old} AND status = OLD.status AND reason = OLD.reason;
                INSERT INTO {counts} VALUES ({new}, NEW.status, NEW.reason, 1) ON CONFLICT DO UPDATE SET n = n + 1;
            END""",
            f"""CREATE TRIGGER messages_time_moved{suffix} AFTER UPDATE ON messages
                WHEN NEW.status != 'received' AND {SECONDS.format(m="OLD")} IS NOT {SECONDS.format(m="NEW")} BEGIN
                UPDATE {times} SET n = n - 1 WHERE {old} AND seconds = {SECONDS.format(m="OLD")};
                INSERT INTO {times} SELECT {new}, {SECONDS.format(m="NEW")}, 1
                WHERE {SECONDS.format(m="NEW")} IS NOT NULL ON CONFLICT DO UPDATE SET n = n + 1;
            END""",
        ]
    return statements


STATS_SCHEMA = _stats_schema()

# Each entry brings the schema from its index to the next version; PRAGMA user_version records it.
# Every event touches two B-trees at random places (its message's index entry and current row);
# each random touch costs a page written to the WAL, so there are no more of them than that.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            provider TEXT NOT NULL,
            message_id TEXT NOT NULL,
            status TEXT NOT NULL,
            rank INTEGER NOT NULL,
            occurred_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            body BLOB NOT NULL
        )""",
        # The id is a hash that includes provider and message id, so this is unique on id alone
        # (one callback stored once) and also serves a message's timeline.
        "CREATE UNIQUE INDEX events_by_message ON events (provider, message_id, id)",
        """CREATE TABLE messages (
            provider TEXT NOT NULL,
            message_id TEXT NOT NULL,
            rank INTEGER NOT NULL,
            occurred_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            event_id TEXT NOT NULL,
            PRIMARY KEY (provider, message_id)
        ) WITHOUT ROWID""",
        # Precedence (docs/events.md), decided inside the inserting statement: a row moves only to a greater
        # (rank, occurred_at, received_at); so a late `sent` or an `unknown` never moves it back.
        """CREATE TRIGGER events_move_current AFTER INSERT ON events BEGIN
            INSERT INTO messages (provider, message_id, rank, occurred_at, received_at, event_id)
            VALUES (NEW.provider, NEW.message_id, NEW.rank, NEW.occurred_at, NEW.received_at, NEW.id)
            ON CONFLICT (provider, message_id) DO UPDATE SET
                rank = excluded.rank, occurred_at = excluded.occurred_at,
                received_at = excluded.received_at, event_id = excluded.event_id
            WHERE (excluded.rank, excluded.occurred_at, excluded.received_at)
                > (messages.rank, messages.occurred_at, messages.received_at);
        END""",
        "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY, at TEXT NOT NULL)",
    ],
    [  # 2: the forwarding outbox, one row per (subscription, event), written with the event
        """CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            subscription TEXT NOT NULL,
            event_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            message_id TEXT NOT NULL,
            body BLOB NOT NULL,
            current TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            next_at TEXT NOT NULL,
            lease_until TEXT,
            claimed_by TEXT,
            schedule_from INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX deliveries_due ON deliveries (state, next_at)",
        "CREATE INDEX deliveries_by_message ON deliveries (provider, message_id)",
        """CREATE TABLE attempts (
            delivery_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            at TEXT NOT NULL,
            http_status INTEGER,
            error TEXT,
            duration_ms REAL NOT NULL,
            PRIMARY KEY (delivery_id, attempt)
        )""",
        # A subscription that answered 410 Gone: its pending deliveries are not sent (SPEC §7).
        "CREATE TABLE disabled_subscriptions (name TEXT PRIMARY KEY, at TEXT NOT NULL, reason TEXT NOT NULL)",
    ],
    [  # 3: the message filter of `deliveries` finds the rows by time, not by an index of random keys
        "DROP INDEX deliveries_by_message",
        "CREATE INDEX deliveries_by_time ON deliveries (created_at)",
    ],
    [  # 4: genuine callbacks of kinds no parser reads yet, and the parts of messages that come in parts
        """CREATE TABLE unread (
            id TEXT PRIMARY KEY,
            endpoint TEXT NOT NULL,
            provider TEXT NOT NULL,
            kind TEXT NOT NULL,
            received_at TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX unread_by_time ON unread (received_at)",
        """CREATE TABLE message_parts (
            endpoint TEXT NOT NULL,
            grp TEXT NOT NULL,
            number INTEGER NOT NULL,
            part_id TEXT NOT NULL,
            total INTEGER NOT NULL,
            received_at TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (endpoint, grp, number)
        )""",
        # The parts of messages already stored: a late retry of one is known, not a new message.
        "CREATE TABLE joined_parts (endpoint TEXT NOT NULL, part_id TEXT NOT NULL, PRIMARY KEY (endpoint, part_id))",
    ],
    [  # 5: a failure's reason category (SPEC §9), for /v1/events?reason=; events stored before have none
        "ALTER TABLE events ADD COLUMN reason TEXT",
        "CREATE INDEX events_by_reason ON events (reason, seq) WHERE reason IS NOT NULL",
    ],
    # 6: the facts /v1/stats reads, kept in the same write as each event (docs/architecture.md, Stats)
    [
        "ALTER TABLE events ADD COLUMN endpoint TEXT",
        "ALTER TABLE events ADD COLUMN country TEXT",
        *[f"ALTER TABLE messages ADD COLUMN {column}" for column in (
            "endpoint TEXT NOT NULL DEFAULT ''", "country TEXT NOT NULL DEFAULT 'unknown'",
            "created_at TEXT NOT NULL DEFAULT ''", "status TEXT NOT NULL DEFAULT ''",
            "reason TEXT NOT NULL DEFAULT ''", "start_occ TEXT", "start_rcv TEXT", "done_occ TEXT", "done_rcv TEXT")],
        # Messages stored before: their facts from their events (country_of is the gateway's, registered by migrate).
        f"""UPDATE messages SET
            endpoint = coalesce(json_extract(CAST(e.body AS TEXT), '$.endpoint'), ''),
            status = e.status, reason = coalesce(e.reason, ''),
            created_at = f.created_at, country = country_of(f.to_), start_occ = f.start_occ,
            start_rcv = f.start_rcv, done_occ = f.done_occ, done_rcv = f.done_rcv
        FROM events e, (SELECT provider, message_id, min(received_at) AS created_at,
                json_extract(CAST(min(body) AS TEXT), '$.to') AS to_, {first_times()}
            FROM events GROUP BY provider, message_id) AS f
        WHERE e.provider = messages.provider AND e.message_id = messages.message_id AND e.id = messages.event_id
          AND f.provider = messages.provider AND f.message_id = messages.message_id""",
        *STATS_SCHEMA,
        "DROP TRIGGER events_move_current",
        MOVE_CURRENT,
        # /v1/events' filters by index, not by scanning (the events' own order is seq)
        "CREATE INDEX events_by_status ON events (status, seq)",
        "CREATE INDEX events_by_provider ON events (provider, seq)",
        "CREATE INDEX events_by_time ON events (received_at)",
        "ANALYZE",
    ],
    [  # 7: refused callbacks, kept to be explained and replayed (SPEC §11)
        """CREATE TABLE refused (
            id TEXT PRIMARY KEY,
            endpoint TEXT NOT NULL,
            provider TEXT NOT NULL,
            code TEXT NOT NULL,
            detail TEXT NOT NULL,
            method TEXT NOT NULL,
            url TEXT NOT NULL,
            query TEXT NOT NULL,
            headers TEXT NOT NULL,
            body BLOB NOT NULL,
            received_at TEXT NOT NULL,
            size INTEGER NOT NULL
        )""",
        "CREATE INDEX refused_by_endpoint ON refused (endpoint, received_at)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
EVENT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_EVENTS = """INSERT INTO events (id, provider, message_id, status, rank, occurred_at, received_at, body, reason,
                    endpoint, country)
VALUES {rows} ON CONFLICT (provider, message_id, id) DO NOTHING"""
# (id, provider, message_id, status, rank, occurred_at, received_at, body, reason category or None,
#  endpoint, country)
Row = tuple[str, str, str, str, int, str, str, bytes, str | None, str, str]


class WriterTurn:
    """Writers of several workers (and the forwarding dispatcher) take turns through a file lock,
    not through SQLite's lock.

    SQLite answers a busy database by sleeping and retrying (1, 2, 5, 10… ms); with two
    workers that turned short commits into 100 ms stalls. flock wakes the waiter the moment
    the other writer is done. SQLite's own locking still guards everything; this only orders.
    """

    def __init__(self, path: str) -> None:
        self.path = path + "-writer.lock"
        self.fd: int | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:  # cannot create it (read-only directory): SQLite's own locking alone
                yield
                return
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


def connect(path: str, *, synchronous: str = "full", busy_timeout_ms: int = 5000, statements: int = 128,
            ) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout_ms / 1000, cached_statements=statements)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA synchronous = {'NORMAL' if synchronous.lower() == 'normal' else 'FULL'}")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema in one transaction; refuse a file from a newer gateway."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.create_function("country_of", 1, country_of, deterministic=True)  # schema 6 fills old messages' country
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this gateway's")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# A Part's current column, filled inside the INSERT (a query per event from Python cost the writer
# more than the insert itself): the bytes of base.current_json(), from the row's (provider, message_id),
# which take the current column's place among the parameters.
CURRENT = ("(SELECT json_object('status', e.status, 'final', json(CASE WHEN e.status IN ({finals}) THEN 'true'"
           " ELSE 'false' END), 'updated_at', e.received_at) FROM messages m JOIN events e"
           " ON e.provider = m.provider AND e.message_id = m.message_id AND e.id = m.event_id"
           " WHERE m.provider = ? AND m.message_id = ?)").format(
    finals=", ".join(f"'{status.value}'" for status in Status if status.final))


def insert_events(conn: sqlite3.Connection, rows: list[Row], extras: list[list[Rows]] | None = None) -> list[bool]:
    """The batch in one statement (the trigger moves current statuses), with each new event's extra
    rows (a Part's, such as the outbox) in the same transaction: all of it commits, or none.

    True for each row stored now, False for a duplicate: of a stored event or of an earlier row
    of the same batch. Which rows ON CONFLICT skipped is only looked up when the count says some were.
    """
    if not extras or not any(extras):
        return _insert_events(conn, rows)  # one statement: its own transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = _insert_events(conn, rows)
        added = [((row[1], row[2]), extra) for row, new, extra in zip(rows, results, extras, strict=True) if new]
        for (table, columns, current), values in rows_by_table(added, lambda key: key).items():
            marks = [CURRENT if column == current else "?" for column in columns]
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)})", values)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return results


def _insert_events(conn: sqlite3.Connection, rows: list[Row]) -> list[bool]:
    results = first_occurrences(row[0] for row in rows)
    new = [row for row, first in zip(rows, results, strict=True) if first]
    params: list[Any] = [value for row in new for value in row]
    cursor = conn.execute(INSERT_EVENTS.format(rows=", ".join([EVENT_ROW] * len(new))), params)
    if cursor.rowcount < len(new):
        # Rows inserted by one statement take consecutive seqs, ending at lastrowid.
        last = cursor.lastrowid or 0
        inserted = {found for (found,) in conn.execute(
            "SELECT id FROM events WHERE seq > ? AND seq <= ?", (last - cursor.rowcount, last))}
        results = [fresh and row[0] in inserted for fresh, row in zip(results, rows, strict=True)]
    return results


def heartbeat(conn: sqlite3.Connection, at: str) -> None:
    conn.execute("INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at", (at,))
