"""The SQLite writer process's protocol: one answer per event line, in order; end of input commits."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from gateway.model import Status, StatusEvent
from gateway.sinks.sqlite_db import connect, migrate


def line(message: str, status: Status = Status.SENT) -> bytes:
    return StatusEvent(provider="twilio", endpoint="main", message_id=message, status=status,
                       provider_status=status.value, received_at="2026-01-01T00:00:00.000000Z").dumps()


def run_writer(db: Path, data: bytes) -> bytes:
    conn = connect(str(db))
    migrate(conn)
    conn.close()
    return subprocess.run([sys.executable, "-m", "gateway.sinks.sqlite_writer", str(db), "full", "1000", "2"],
                          input=data, capture_output=True, timeout=60, check=True).stdout


def test_answers_come_in_order_and_a_cut_last_line_is_not_stored(tmp_path: Path) -> None:
    data = b"\n".join([line("SM1"), line("SM2"), line("SM1"), line("SM3", Status.DELIVERED)]) + b"\n" + line("SM4")[:20]
    assert run_writer(tmp_path / "w.db", data) == b"1\n1\n0\n1\n"  # batches of two, as configured
    stored = sqlite3.connect(tmp_path / "w.db").execute("SELECT message_id FROM events ORDER BY seq").fetchall()
    assert stored == [("SM1",), ("SM2",), ("SM3",)]


def test_an_unreadable_line_fails_its_batch_and_nothing_else(tmp_path: Path) -> None:
    data = b"\n".join([line("SM1"), b"{not json", line("SM2"), line("SM3")]) + b"\n"
    answers = run_writer(tmp_path / "w.db", data).splitlines()
    assert [a[:1] for a in answers] == [b"E", b"E", b"1", b"1"]
    stored = sqlite3.connect(tmp_path / "w.db").execute("SELECT message_id FROM events ORDER BY seq").fetchall()
    assert stored == [("SM2",), ("SM3",)]


def burst(db: Path, count: int, wal_limit: int) -> tuple[int, int]:
    """(the WAL's size after a burst of `count` events that outruns the checkpoints, then after up
    to 50 more commits, or as soon as it is within `wal_limit`).

    A reader holds its snapshot through the burst, so no checkpoint can copy it and the WAL must
    grow, as it does when a sustained burst outruns the PASSIVE checkpoints."""
    lines = b"".join(line(f"SM{index:032d}", Status.DELIVERED) + b"\n" for index in range(count))
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchone()
    writer = subprocess.Popen([sys.executable, "-m", "gateway.sinks.sqlite_writer", str(db), "full", "5000", "256",
                               str(wal_limit)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdin is not None and writer.stdout is not None
    feeding = threading.Thread(target=lambda: (writer.stdin.write(lines), writer.stdin.flush()))  # type: ignore[union-attr]
    feeding.start()
    answers = b"".join(writer.stdout.readline() for _ in range(count))
    feeding.join()
    assert answers == b"1\n" * count
    wal = Path(str(db) + "-wal")
    during = wal.stat().st_size
    reader.execute("COMMIT")
    reader.close()
    for index in range(50):  # each commit lets the checkpointer look again
        writer.stdin.write(line(f"SM-after-{index}", Status.DELIVERED) + b"\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == b"1\n"
        if wal.stat().st_size <= wal_limit:
            break
    after = wal.stat().st_size
    writer.stdin.close()
    assert writer.wait(60) == 0
    writer.stdout.close()
    return during, after


def test_a_burst_that_outruns_the_checkpoints_leaves_the_wal_within_its_bound(tmp_path: Path) -> None:
    limit = 1 << 20
    bounded, unbounded = tmp_path / "bounded.db", tmp_path / "unbounded.db"
    for db in (bounded, unbounded):
        conn = connect(str(db))
        migrate(conn)
        conn.close()
    during, after = burst(bounded, 15_000, limit)
    loose_during, loose_after = burst(unbounded, 15_000, 1 << 40)
    assert during > 4 * limit and loose_during > 4 * limit  # the burst grew both
    assert loose_after >= loose_during  # unbounded, the WAL keeps what the burst grew it to
    assert after <= limit, (during, after)
