"""The SQLite writer process's protocol: one answer per event line, in order; end of input commits."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
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
