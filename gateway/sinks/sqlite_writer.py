"""The SQLite writer process: events in on stdin, one answer per event out on stdout.

    python -m gateway.sinks.sqlite_writer PATH SYNCHRONOUS BUSY_TIMEOUT_MS MAX_BATCH [WAL_LIMIT_BYTES]

Why a process and not a thread: under load the event loop holds the GIL nearly all the time, and a
writer thread needs it back after every SQLite call; it waited longer for the GIL than for the disk
(docs/benchmarks.md). In its own process the writer commits while the gateway parses the next
callbacks, truly in parallel.

Protocol: each input line is one event as StatusEvent.dumps() writes it, optionally followed by a
tab and the JSON list of a Part's rows (sinks/base.py Rows), which are inserted in the same
transaction, and only if the event is new (orjson never writes a raw tab). Lines are taken in
batches of whatever has arrived (at most MAX_BATCH), each batch committed in one transaction;
then one line per event, in input order: `1` stored, `0` duplicate, `E <reason>` not stored.
End of input (the gateway closed the pipe, or died) commits what was read, then exits, so
SIGINT and SIGTERM are ignored here: the gateway process decides when the writer stops.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading

import orjson

from gateway.country import country_of
from gateway.model import STATUS_TABLE
from gateway.sinks.base import Rows
from gateway.sinks.sqlite_db import Row, WriterTurn, connect, insert_events

CACHE_KIB = 64 * 1024
WAL_LIMIT = 64 * 1024 * 1024  # bytes of WAL past which it is restarted (SQLiteSinkConfig.wal_limit_bytes)
RANKS = {status.value: rank for status, (rank, _) in STATUS_TABLE.items()}


def extras_of(line: bytes) -> list[Rows]:
    """A Part's rows ride after a tab (never inside JSON as orjson writes it): [[table, columns, values], …]."""
    _, tab, extra = line.partition(b"\t")
    return [Rows.from_json(item) for item in orjson.loads(extra)] if tab else []


def row_of(line: bytes) -> Row:
    line = line.partition(b"\t")[0]
    event = orjson.loads(line)
    status = event["status"]  # an unknown word is a KeyError in RANKS: the line is refused
    reason = event.get("reason")
    return (event["id"], event["provider"], event["message_id"], status, RANKS[status],
            event["occurred_at"] or "", event["received_at"], line, reason["category"] if reason else None,
            event["endpoint"], country_of(event.get("to")))


class Writer:
    def __init__(self, path: str, synchronous: str, busy_timeout_ms: int, max_batch: int,
                 wal_limit: int = WAL_LIMIT) -> None:
        self.path = path
        self.wal_limit = wal_limit
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max_batch
        self.conn: sqlite3.Connection | None = None
        self.turn = WriterTurn(path)
        self.committed = threading.Event()
        self.stopping = False

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = connect(self.path, synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms,
                                statements=self.max_batch + 16)  # a batch statement per row count
            # Checkpoints run beside the writer (below), so no commit waits for one.
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
            # Index pages of a grown store: SQLite's default 2 MiB cache re-reads them every batch.
            self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # When the WAL restarts, SQLite trims the file back to this: a burst's WAL does not stay.
            self.conn.execute(f"PRAGMA journal_size_limit = {self.wal_limit}")
        return self.conn



    def commit(self, lines: list[bytes]) -> bytes:
        try:
            rows = [row_of(line) for line in lines]
            extras = [extras_of(line) for line in lines]
        except (ValueError, KeyError, TypeError) as exc:  # cannot happen from the gateway; never store half
            return f"E the writer received an unreadable event: {exc}\n".encode() * len(lines)
        try:
            with self.turn():
                results = insert_events(self.connection(), rows, extras)
        except sqlite3.Error as exc:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            reason = " ".join(str(exc).split())
            return f"E the SQLite store cannot take events: {reason}\n".encode() * len(lines)
        self.committed.set()
        return b"".join(b"1\n" if new else b"0\n" for new in results)

    def checkpoint(self) -> None:
        """Copies committed pages from the WAL into the database while the writer goes on.

        SQLite's automatic checkpoint runs inside the commit that crosses its threshold, and
        copying and syncing a thousand pages there held up every request of that batch. A PASSIVE
        checkpoint never blocks the writer; run after each commit, it keeps the WAL short, and the
        WAL restarts from its beginning whenever the checkpoint has caught up with it.
        """
        conn: sqlite3.Connection | None = None
        while True:
            self.committed.wait()
            self.committed.clear()
            if self.stopping:
                break
            try:
                if conn is None:
                    conn = connect(self.path, synchronous=self.synchronous, busy_timeout_ms=0)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if self.wal_size() > self.wal_limit:
                    self.restart(conn)
            except sqlite3.Error:  # busy (another worker's checkpoint) or an outage the writer reports
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def wal_size(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    def restart(self, conn: sqlite3.Connection) -> None:
        """Past the bound: a RESTART checkpoint copies what PASSIVE could not (a sustained burst
        outruns it) and makes the next commit write the WAL from its start, where
        journal_size_limit trims the file. With no busy wait (this connection's busy_timeout is 0)
        it never holds the writer for a reader: a reader still on an old snapshot (a long export)
        makes it a PASSIVE one, and the next commit's checkpoint tries again."""
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def run(self, fd_in: int, fd_out: int) -> None:
        checkpointer = threading.Thread(target=self.checkpoint, name="sqlite-checkpointer", daemon=True)
        checkpointer.start()
        pending = b""
        while True:
            data = os.read(fd_in, 1 << 20)
            if not data:
                break
            *lines, pending = (pending + data).split(b"\n")
            for start in range(0, len(lines), self.max_batch):
                _write_all(fd_out, self.commit(lines[start:start + self.max_batch]))
        # A partial last line means the gateway died mid-write: that event was never acknowledged.
        self.stopping = True
        self.committed.set()
        checkpointer.join()
        if self.conn is not None:
            self.conn.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, synchronous, busy_timeout_ms, max_batch = sys.argv[1:5]
    wal_limit = int(sys.argv[5]) if len(sys.argv) > 5 else WAL_LIMIT
    try:
        Writer(path, synchronous, int(busy_timeout_ms), int(max_batch), wal_limit).run(
            sys.stdin.fileno(), sys.stdout.fileno())
    except BrokenPipeError:  # the gateway is gone: nobody is waiting for answers
        pass


if __name__ == "__main__":
    main()
