"""SQLiteSink, the embedded default store: WAL, group commit in a writer process.

Each request hands its event to the writer and awaits the commit of the batch it landed in, so
many concurrent callbacks share one fsync and none is answered before its event is on disk.
Why the writer is a process of its own: sqlite_writer.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import orjson

from gateway.errors import SinkUnavailable
from gateway.model import Fragment, Refused, StatusEvent, Unread, utc_iso
from gateway.sinks.base import Attempt, Claimed, Part
from gateway.sinks.batch import Batcher, Observe, Outcome
from gateway.sinks.sql import (
    KeptSQL,
    OutboxSQL,
    RefusedSQL,
    SQLReads,
    abandoned,
    complete,
    delivery_json,
    finish_params,
    part_params,
    parts_of,
    refused_counts,
    refused_of,
    refused_params,
    unread_json,
    unread_params,
)
from gateway.sinks.sqlite_db import WriterTurn, connect, heartbeat, migrate
from gateway.sinks.sqlite_writer import WAL_LIMIT

T = TypeVar("T")
OUTBOX = OutboxSQL("?")
KEPT = KeptSQL("?")
REFUSED = RefusedSQL("?")
RESTART_DELAY = 1.0  # seconds before a writer that died is started again
READERS = 4  # threads reading for /v1 and the CLI, each with its own kept connection
MIN_FREE_BYTES = 1 << 20  # below this, /readyz says the store is not ready: the next batch may not fit


class SQLiteSink(SQLReads):
    mark = "?"

    def __init__(
        self, path: str, *, synchronous: str = "full", busy_timeout_ms: int = 5000, max_batch: int = 256,
        writer: bool = True, parts: Sequence[Part] = (), observe: Observe | None = None,
        wal_limit_bytes: int = WAL_LIMIT,
    ) -> None:
        self.path = path
        self._with_writer = writer  # False: reads only (status, tail), no writer process
        self._parts = tuple(parts)
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._wal_limit = wal_limit_bytes
        self._writer: asyncio.subprocess.Process | None = None
        self._answers: asyncio.Task[None] | None = None
        # One batch at a time goes to the writer; while it commits, the next one gathers here: one
        # pipe write per commit. The writer splits what it reads into transactions of max_batch.
        self._batches: Batcher[bytes] = Batcher(self._commit, what="the SQLite store", max_batch=1 << 16,
                                                observe=observe)
        self._batch: asyncio.Future[list[Outcome]] | None = None  # the answers to the batch sent
        self._expected = 0
        self._answered: list[Outcome] = []
        self._closing = False
        # The dispatcher's writes: claims, and finished attempts committed together (one fsync a batch).
        # One connection on one thread, kept open: a new connection per transaction read the schema
        # and warmed its page cache every time (6 % of the gateway's CPU while forwarding).
        self._turn = WriterTurn(path)
        self._outbox_thread: ThreadPoolExecutor | None = None
        self._outbox_conn: sqlite3.Connection | None = None
        self._kept_conn: sqlite3.Connection | None = None  # synchronous=FULL: what it keeps is acknowledged
        self._finishes: Batcher[tuple[Attempt, str | None]] = Batcher(
            self._finish_batch, what="the SQLite outbox", max_batch=1024)
        self._readers: ThreadPoolExecutor | None = None
        self._reader = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []

    def connect(self) -> sqlite3.Connection:
        return connect(self.path, synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms)

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._migrate)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"cannot open the SQLite store {self.path}: {exc}") from exc
        self._closing = False
        if self._with_writer:
            await self._start_writer()

    def _migrate(self) -> None:
        conn = self.connect()
        try:
            migrate(conn)
        finally:
            conn.close()

    async def _start_writer(self) -> None:
        self._writer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.sinks.sqlite_writer",
            self.path, self._synchronous, str(self._busy_timeout_ms), str(self._max_batch), str(self._wal_limit),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        self._answers = asyncio.create_task(self._read_answers(self._writer))

    def write(self, event: StatusEvent) -> asyncio.Future[bool]:
        line = event.dumps()
        extras = [rows.to_json() for part in self._parts for rows in part.rows(event)]
        if extras:  # the writer inserts them in the event's transaction (sqlite_writer.extras_of)
            line += b"\t" + orjson.dumps(extras)
        return self._batches.submit(line)

    async def _commit(self, lines: list[bytes]) -> list[Outcome]:
        writer = self._writer
        if writer is None or writer.returncode is not None or writer.stdin is None:
            raise SinkUnavailable("the SQLite writer is not running; it is being restarted")
        try:
            writer.stdin.write(b"\n".join(lines) + b"\n")
        except (OSError, RuntimeError) as exc:  # the pipe of a writer that just died
            raise SinkUnavailable("the SQLite writer stopped") from exc
        self._batch = asyncio.get_running_loop().create_future()
        self._expected, self._answered = len(lines), []
        return await self._batch

    async def _read_answers(self, writer: asyncio.subprocess.Process) -> None:
        """Collects the writer's answers, one line per event in order, into the batch sent; fails
        that batch if the writer ends (maybe stored, never acknowledged: the retry dedups)."""
        assert writer.stdout is not None
        pending = b""
        while data := await writer.stdout.read(1 << 16):
            *lines, pending = (pending + data).split(b"\n")
            self._answered += [line == b"1" if line in (b"1", b"0") else
                               SinkUnavailable(line.decode(errors="replace").removeprefix("E ")) for line in lines]
            if self._batch is not None and len(self._answered) >= self._expected:
                self._batch.set_result(self._answered[:self._expected])
                self._batch = None
        await writer.wait()
        if self._batch is not None:
            self._batch.set_exception(SinkUnavailable("the SQLite writer stopped"))
            self._batch = None
        if not self._closing:
            await asyncio.sleep(RESTART_DELAY)
            if not self._closing:
                await self._start_writer()

    async def ready(self) -> bool:
        """Writable now: a real (tiny) commit, and room on the disk, so a read-only file or a full disk
        shows here (a one-page commit may still fit in WAL pages SQLite already owns)."""
        alive = self._writer is not None and self._writer.returncode is None
        return alive and await asyncio.to_thread(self._probe)

    def _probe(self) -> bool:
        try:
            disk = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
                return False
            conn = self.connect()
            try:
                heartbeat(conn, utc_iso(datetime.now().astimezone()))
            finally:
                conn.close()
        except (sqlite3.Error, OSError):
            return False
        return True

    async def close(self) -> None:
        """Sends what is queued, then ends the writer's input: it commits and answers all of it first."""
        self._closing = True
        if self._readers is not None:
            self._readers.shutdown()
            self._readers = None
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
            self._reader = threading.local()
        await self._finishes.drain()
        if self._outbox_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._outbox_thread, self._close_outbox)
            self._outbox_thread.shutdown()
            self._outbox_thread = None
        writer, answers = self._writer, self._answers
        if writer is None or answers is None:
            return
        await self._batches.drain()
        if writer.stdin is not None:
            writer.stdin.close()
        await answers
        self._writer = self._answers = None

    # --- the outbox (Outbox protocol): the dispatcher's leases and records ----------------------

    def _transaction(self, work: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """One write transaction of the gateway process, in its turn with the writer processes.

        The outbox's are synchronous=NORMAL: a lease or an attempt's record lost to a power cut only
        means the delivery is sent again (at least once, the same webhook-id). `durable` ones (the
        kept callbacks, answered 200 once committed) are FULL, as events are.
        """
        if durable:
            if self._kept_conn is None:
                self._kept_conn = connect(self.path, synchronous="full", busy_timeout_ms=self._busy_timeout_ms)
            conn = self._kept_conn
        else:
            if self._outbox_conn is None:
                self._outbox_conn = connect(self.path, synchronous="normal", busy_timeout_ms=self._busy_timeout_ms)
            conn = self._outbox_conn
        try:
            with self._turn():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return result
        except sqlite3.Error:
            self._close_outbox()  # the next transaction starts on a new connection
            raise

    def _close_outbox(self) -> None:
        for conn in (self._outbox_conn, self._kept_conn):
            if conn is not None:
                conn.close()
        self._outbox_conn = self._kept_conn = None

    async def claim(self, *, now: str, lease_until: str, limit: int, by: str) -> list[Claimed]:
        def work(conn: sqlite3.Connection) -> list[Claimed]:
            if conn.execute(OUTBOX.any_disabled).fetchone()[0]:
                conn.execute(OUTBOX.disable_pending)
            # The outbox writes the body as text (one column type for both stores).
            return [Claimed(row[0], row[1], row[2], row[3].encode(), row[4].encode(), row[5], row[6], row[7])
                    for row in conn.execute(OUTBOX.claim, (lease_until, now, limit, by)).fetchall()]

        return await self._outbox(work)

    async def finish(self, attempt: Attempt, *, disable: str | None = None) -> None:
        await self._finishes.submit((attempt, disable))

    async def _finish_batch(self, batch: list[tuple[Attempt, str | None]]) -> list[bool]:
        def work(conn: sqlite3.Connection) -> list[bool]:
            params = [finish_params(attempt) for attempt, _ in batch]
            conn.executemany(OUTBOX.finish, [update for update, _ in params])
            conn.executemany(OUTBOX.record, [record for _, record in params])
            for attempt, disable in batch:
                if disable:
                    conn.execute(OUTBOX.disable, (disable, attempt.at, f"HTTP {attempt.http_status}"))
            return [True] * len(batch)

        return await self._outbox(work)

    async def release(self, delivery_ids: Sequence[str]) -> None:
        await self._outbox(lambda conn: conn.executemany(OUTBOX.release, [(i,) for i in delivery_ids]))

    async def backlog(self) -> tuple[int, str | None]:
        ((count, oldest),) = await self._fetch(OUTBOX.backlog, ())
        return int(count), oldest

    async def deliveries(self, *, subscription: str | None = None, state: str | None = None,
                         message_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, params = OUTBOX.listing(subscription, state, message_id, limit)
        return [delivery_json(row) for row in await self._fetch(sql, tuple(params))]

    async def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        found = await self._fetch(OUTBOX.one, (delivery_id,))
        return delivery_json(found[0], await self._fetch(OUTBOX.history, (delivery_id,))) if found else None

    async def redeliver(self, *, ids: Sequence[str] = (), subscription: str | None = None,
                        since: str | None = None, now: str) -> list[str]:
        sql, params = OUTBOX.requeuing(ids, subscription, since, now)

        def work(conn: sqlite3.Connection) -> list[str]:
            if subscription is not None and not ids:
                conn.execute(OUTBOX.enable, (subscription,))
            return [row[0] for row in conn.execute(sql, params).fetchall()]

        return await self._outbox(work)

    # --- kept callbacks (Store protocol): unread kinds, parts of a message -----------------------

    async def keep_unread(self, endpoint: str, provider: str, unread: Unread, received_at: str) -> bool:
        params = unread_params(endpoint, provider, unread, received_at)
        return await self._outbox(lambda conn: conn.execute(KEPT.keep_unread, params).rowcount == 1, durable=True)

    async def keep_part(self, endpoint: str, provider: str, part: Fragment) -> list[Fragment] | None:
        def work(conn: sqlite3.Connection) -> list[Fragment] | None:
            # BEGIN IMMEDIATE holds the write lock: parts kept at once by two workers go one by one.
            known, holder = conn.execute(KEPT.place, (endpoint, part.id, part.group, part.number)).fetchone()
            if known:
                return []
            if holder is not None and holder != part.id:
                old = parts_of(part, conn.execute(KEPT.parts, (endpoint, part.group)).fetchall())
                conn.execute(KEPT.keep_unread, unread_params(endpoint, provider, abandoned(old), part.received_at))
                conn.executemany(KEPT.remember, [(endpoint, p.id) for p in old])
                conn.execute(KEPT.drop_group, (endpoint, part.group))
            conn.execute(KEPT.keep_part, part_params(endpoint, part))
            return complete(part, conn.execute(KEPT.parts, (endpoint, part.group)).fetchall())

        return await self._outbox(work, durable=True)

    async def forget_parts(self, endpoint: str, parts: Sequence[Fragment]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(KEPT.remember, [(endpoint, part.id) for part in parts])
            conn.executemany(KEPT.forget, [(endpoint, part.group, part.number, part.id) for part in parts])

        await self._outbox(work, durable=True)

    async def unread(self, *, endpoint: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, params = KEPT.listing(endpoint, limit)
        return [unread_json(row) for row in await self._fetch(sql, tuple(params))]

    # --- the quarantine (Store protocol): refused callbacks ------------------------------------

    async def quarantine(self, refused: Sequence[Refused], *, max_count: int, max_bytes: int) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(REFUSED.keep, [refused_params(r) for r in refused])
            for endpoint in sorted({r.endpoint for r in refused}):
                conn.execute(REFUSED.trim, (endpoint, max_count, max_bytes))

        # synchronous=NORMAL: a refused callback was answered 4xx, nothing acknowledged waits on it.
        await self._outbox(work)

    async def refused(self, *, endpoint: str | None = None, ids: Sequence[str] = (), since: str | None = None,
                      until: str | None = None, limit: int = 100) -> list[Refused]:
        sql, params = REFUSED.listing(endpoint=endpoint, ids=ids, since=since, until=until, limit=limit)
        return [refused_of(row) for row in await self._fetch(sql, tuple(params))]

    async def refused_counts(self) -> list[dict[str, Any]]:
        return refused_counts(await self._fetch(REFUSED.counts, ()))

    async def forget_refused(self, ids: Sequence[str]) -> None:
        if ids:
            await self._outbox(lambda conn: conn.execute(REFUSED.forget(len(ids)), tuple(ids)))

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._fetch(sql, params)

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """A read on one of READERS threads, each with its connection kept open: opening one per
        read (schema parse, cold page cache) was most of a message lookup's 4-10 ms."""
        def run() -> list[tuple[Any, ...]]:
            conn = getattr(self._reader, "conn", None)
            if conn is None:
                conn = self._reader.conn = self.connect()
                self._reader_conns.append(conn)
            try:
                return [tuple(row) for row in conn.execute(sql, params)]
            except sqlite3.Error:
                self._reader.conn = None  # the next read on this thread opens a new one
                raise

        if self._readers is None:
            self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="sqlite-read")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"cannot read the SQLite store: {exc}") from exc

    async def _outbox(self, work: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        if self._outbox_thread is None:
            self._outbox_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-outbox")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._outbox_thread, self._transaction, work, durable)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"the SQLite store cannot be written: {exc}") from exc

    # --- reads: SQLReads runs its queries through this ------------------------------------------

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[int, StatusEvent]]:
        return [(seq, StatusEvent.loads(body)) for seq, body in await self._fetch(sql, params)]
