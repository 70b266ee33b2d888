"""SQLiteSink, the embedded default store: one writer thread, WAL, group commit.

Each request enqueues its event and awaits the commit of the batch it landed in, so many
concurrent callbacks share one fsync and none is answered before its event is on disk.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from datetime import datetime
from typing import Any

from gateway.errors import SinkUnavailable
from gateway.model import Status, StatusEvent, utc_iso

# Each entry brings the schema from its index to the next version; PRAGMA user_version records it.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            provider TEXT NOT NULL,
            message_id TEXT NOT NULL,
            status TEXT NOT NULL,
            received_at TEXT NOT NULL,
            body BLOB NOT NULL
        )""",
        "CREATE INDEX events_by_message ON events (provider, message_id, seq)",
        """CREATE TABLE messages (
            provider TEXT NOT NULL,
            message_id TEXT NOT NULL,
            rank INTEGER NOT NULL,
            occurred_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            event_id TEXT NOT NULL,
            PRIMARY KEY (provider, message_id)
        ) WITHOUT ROWID""",
        "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY, at TEXT NOT NULL)",
    ],
    [
        # v2: the current status moves in a trigger, so a batch is one INSERT statement.
        "ALTER TABLE events ADD COLUMN rank INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE events ADD COLUMN occurred_at TEXT NOT NULL DEFAULT ''",
        # SPEC §4 precedence, decided inside the inserting statement: a row moves only to a greater
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
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
EVENT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_EVENTS = """INSERT INTO events (id, provider, message_id, status, received_at, body, rank, occurred_at)
VALUES {rows} ON CONFLICT (id) DO NOTHING"""
STOP = object()
Pending = tuple[StatusEvent, "asyncio.Future[bool]"]


class SQLiteSink:
    def __init__(
        self, path: str, *, synchronous: str = "full", busy_timeout_ms: int = 5000, max_batch: int = 256,
    ) -> None:
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._committed = threading.Event()  # set after each commit; the checkpointer waits on it
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def connect(self) -> sqlite3.Connection:
        # Batch statements differ by row count: room for every size up to max_batch in the cache.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self._busy_timeout_ms / 1000, cached_statements=3 * self._max_batch + 16)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._migrate)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"cannot open the SQLite store {self.path}: {exc}") from exc
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(target=self._checkpoint, name="sqlite-checkpointer", daemon=True)
        self._checkpointer.start()

    def _migrate(self) -> None:
        conn = self.connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this gateway's")
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()

    def write(self, event: StatusEvent) -> asyncio.Future[bool]:
        assert self._loop is not None, "open() first"
        future: asyncio.Future[bool] = self._loop.create_future()
        self._queue.put((event, future))
        return future

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is STOP:
                break
            batch: list[Pending] = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is STOP:
                    stopping = True
                    break
                batch.append(item)
            outcome: list[bool] | SinkUnavailable
            try:
                if conn is None:
                    conn = self.connect()
                    # Checkpoints run beside the writer (below), so no commit waits for one.
                    conn.execute("PRAGMA wal_autocheckpoint = 0")
                outcome = self._commit(conn, [event for event, _ in batch])
                self._committed.set()
            except sqlite3.Error as exc:
                outcome = SinkUnavailable(f"the SQLite store cannot take events: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_settle, batch, outcome)
        if conn is not None:
            conn.close()

    def _checkpoint(self) -> None:
        """Copies committed pages from the WAL into the database while the writer goes on.

        SQLite's automatic checkpoint runs inside the commit that crosses its threshold, and
        copying and syncing a thousand pages there held up every request of that batch (two thirds
        of the commit time, amortized). A PASSIVE checkpoint never blocks the writer; run after
        each commit, it keeps the WAL short, and the WAL restarts from its beginning whenever the
        checkpoint has caught up with it.
        """
        conn: sqlite3.Connection | None = None
        while True:
            self._committed.wait()
            self._committed.clear()
            if self._stopping:
                break
            try:
                if conn is None:
                    conn = self.connect()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:  # busy (another worker's checkpoint) or an outage: the writer reports that
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, events: list[StatusEvent]) -> list[bool]:
        """The batch in one statement: its own transaction, the current statuses moved by the trigger.

        The writer thread needs the GIL back after every statement, and the event loop holds it
        most of the time under load: a statement per event made the commit wait on the GIL, not
        on the disk. A duplicate id is skipped by ON CONFLICT; which ones were skipped is only
        looked up when the row count says some were.
        """
        results, new, seen = [], [], set()
        for e in events:
            fresh = e.id not in seen  # the same callback twice in one batch: the second is a duplicate
            seen.add(e.id)
            results.append(fresh)
            if fresh:
                new.append(e)
        cursor = conn.execute(INSERT_EVENTS.format(rows=", ".join([EVENT_ROW] * len(new))), [
            value for e in new for value in (
                e.id, e.provider, e.message_id, e.status.value, e.received_at, e.dumps(),
                e.status.rank, e.occurred_at or "",
            )])
        if cursor.rowcount < len(new):
            # Rows inserted by one statement take consecutive seqs, ending at lastrowid.
            last = cursor.lastrowid or 0
            inserted = {row[0] for row in conn.execute(
                "SELECT id FROM events WHERE seq > ? AND seq <= ?", (last - cursor.rowcount, last))}
            results = [fresh and e.id in inserted for fresh, e in zip(results, events, strict=True)]
        return results

    async def ready(self) -> bool:
        """Writable now: a real (tiny) commit, so a read-only file or a full disk shows here."""
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> bool:
        try:
            conn = self.connect()
            try:
                conn.execute("INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                             (utc_iso(datetime.now().astimezone()),))
            finally:
                conn.close()
        except sqlite3.Error:
            return False
        return True

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(STOP)  # behind every event already queued: those are committed first
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._checkpointer is not None:
            self._stopping = True
            self._committed.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None

    # --- reads (the Store side) -------------------------------------------------------------

    async def current(self, provider: str, message_id: str) -> StatusEvent | None:
        rows = await self._read(
            "SELECT e.seq, e.body FROM messages m JOIN events e ON e.id = m.event_id"
            " WHERE m.provider = ? AND m.message_id = ?", (provider, message_id))
        return rows[0][1] if rows else None

    async def timeline(self, provider: str, message_id: str) -> list[StatusEvent]:
        rows = await self._read(
            "SELECT seq, body FROM events WHERE provider = ? AND message_id = ? ORDER BY seq",
            (provider, message_id))
        return [event for _, event in rows]

    async def recent(
        self, *, provider: str | None = None, status: Status | None = None,
        since: datetime | None = None, limit: int = 100, after_seq: int | None = None,
    ) -> list[tuple[int, StatusEvent]]:
        clauses, params = filters(provider, status, since, after_seq, "?")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return await self._read(f"SELECT seq, body FROM events{where} ORDER BY seq DESC LIMIT ?", (*params, limit))

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[int, StatusEvent]]:
        def run() -> list[tuple[int, StatusEvent]]:
            conn = self.connect()
            try:
                return [(seq, StatusEvent.loads(body)) for seq, body in conn.execute(sql, params)]
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"cannot read the SQLite store: {exc}") from exc


def filters(
    provider: str | None, status: Status | None, since: datetime | None, after_seq: int | None, mark: str,
) -> tuple[list[str], list[Any]]:
    """WHERE clauses shared by the SQL stores; `mark` makes the placeholders (? or $n)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("provider", "=", provider),
        ("status", "=", status.value if status else None),
        ("received_at", ">=", utc_iso(since) if since else None),
        ("seq", ">", after_seq),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{column} {op} {mark.replace('#', str(len(params)))}")
    return clauses, params


def _settle(batch: list[Pending], outcome: list[bool] | SinkUnavailable) -> None:
    for index, (_, future) in enumerate(batch):
        if future.done():  # the request went away; its event is stored all the same
            continue
        if isinstance(outcome, SinkUnavailable):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[index])
