"""Forwarding across real gateway processes: kill -9 mid-send, two replicas on one PostgreSQL, and
SQLite with --workers 2. At least once, with a stable webhook-id; twice only for what was in flight."""

from __future__ import annotations

import base64
import collections
import os
import signal
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import http_client
from tests.conftest import GatewayProcess, config_document, start_gateway, wait_until
from tests.forward.receiver import Answer, Receiver, serve
from tests.signing import TWILIO_PATH, twilio_fields, twilio_request
from tests.test_replicas import postgres_document, query

SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()
TIMEOUT = 1.0  # the attempt's deadline; a lease then lasts 2 x 1 + 5 = 7 s


def with_forward(document: dict[str, Any], url: str) -> dict[str, Any]:
    document["forward"] = {"retry_schedule": [0.2] * 40, "timeout": TIMEOUT,
                           "subscriptions": [{"name": "crm", "url": url, "secret": SECRET}]}
    return document


def send(gateway: GatewayProcess, sids: list[str]) -> None:
    def one(sid: str) -> int:
        headers, body = twilio_request(twilio_fields("delivered", sid=sid))
        return http_client.post(gateway.url + TWILIO_PATH, headers=headers, content=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(one, sids)) == [200] * len(sids)


@pytest.fixture
def subscriber() -> Iterator[Receiver]:
    receiver = Receiver()
    up = serve(receiver)
    yield receiver
    up.stop()


def sqlite_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    return sqlite3.connect(db).execute(sql).fetchall()


def test_kill_9_mid_send_loses_nothing_and_resends_with_the_same_webhook_id(tmp_path: Path,
                                                                             subscriber: Receiver) -> None:
    document = with_forward(config_document(tmp_path), subscriber.url)
    db = tmp_path / "gateway.db"
    for round_ in range(3):
        # This round's first request is answered slowly: it is in flight when the process dies.
        subscriber.script.append(Answer(200, drip=0.5))
        seen = len(subscriber.requests)
        gateway = start_gateway(tmp_path, document)
        send(gateway, [f"SM{round_:02d}{index:030d}" for index in range(10)])
        wait_until(lambda: len(subscriber.requests) > seen)
        gateway.stop(signal.SIGKILL)
    gateway = start_gateway(tmp_path, document)
    try:
        wait_until(lambda: {s for (s,) in sqlite_rows(db, "SELECT state FROM deliveries")} == {"delivered"})
    finally:
        gateway.stop()
    events = {event_id for (event_id,) in sqlite_rows(db, "SELECT id FROM events")}
    assert len(events) == 30
    received = collections.Counter(r.headers["webhook-id"] for r in subscriber.requests)
    assert set(received) == events  # every acknowledged event reached the subscriber
    # A request sent again is one whose attempt a kill cut before its record committed: sent, maybe
    # answered, never recorded. So each event arrived exactly as often as its delivery recorded
    # attempts, plus at most one per kill; and each round's slow request was such a one.
    recorded = dict(sqlite_rows(db, "SELECT d.event_id, count(a.attempt) FROM deliveries d"
                                    " LEFT JOIN attempts a ON a.delivery_id = d.id GROUP BY d.id"))
    surplus = {event_id: received[event_id] - recorded[event_id] for event_id in events}
    assert all(0 <= extra <= 3 for extra in surplus.values()), surplus
    assert sum(surplus.values()) >= 3
    assert all(recorded[event_id] == 1 for event_id in events)  # the receiver answered 200 at once


def test_two_replicas_on_postgres_share_the_work_and_send_each_delivery_once(
        tmp_path: Path, postgres_dsn: str, subscriber: Receiver) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    document = with_forward(postgres_document(tmp_path, postgres_dsn), subscriber.url)
    a, b = start_gateway(tmp_path / "a", document), start_gateway(tmp_path / "b", document)
    try:
        sids = [f"SM{index:032d}" for index in range(120)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda job: send(*job), [(a, sids[0::2]), (b, sids[1::2])]))
        wait_until(lambda: query(postgres_dsn, "SELECT count(*) FROM deliveries WHERE state = 'delivered'")
                   == [(120,)])
    finally:
        a.stop()
        b.stop()
    received = collections.Counter(r.headers["webhook-id"] for r in subscriber.requests)
    assert set(received.values()) == {1} and len(received) == 120  # nothing failed: each sent once
    senders = query(postgres_dsn, "SELECT claimed_by, count(*) FROM deliveries GROUP BY claimed_by")
    assert len(senders) == 2, senders  # both replicas sent some


def test_a_replica_killed_mid_send_leaves_its_delivery_to_the_other(
        tmp_path: Path, postgres_dsn: str, subscriber: Receiver) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    document = with_forward(postgres_document(tmp_path, postgres_dsn), subscriber.url)
    subscriber.script.append(Answer(200, drip=0.5))  # the first attempt hangs in the receiver
    a = start_gateway(tmp_path / "a", document)
    send(a, ["SM" + "k" * 32])
    wait_until(lambda: len(subscriber.requests) == 1)
    # Killed mid-send before the other starts: a start-up slower than the attempt's deadline would
    # otherwise let the first replica retry by itself before it dies.
    a.stop(signal.SIGKILL)  # its lease stays until it ends
    b = start_gateway(tmp_path / "b", document)
    try:
        wait_until(lambda: query(postgres_dsn, "SELECT state FROM deliveries") == [("delivered",)])
    finally:
        b.stop()
    first, second = subscriber.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 2 * TIMEOUT  # after the lease, not at once


def test_sqlite_with_two_workers_sends_each_delivery_once(tmp_path: Path, subscriber: Receiver) -> None:
    document = with_forward(config_document(tmp_path), subscriber.url)
    gateway = start_gateway(tmp_path, document, "--workers", "2")
    db = tmp_path / "gateway.db"
    try:
        send(gateway, [f"SM{index:032d}" for index in range(80)])
        wait_until(lambda: sqlite_rows(db, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == [(80,)])
    finally:
        gateway.stop()
    received = collections.Counter(r.headers["webhook-id"] for r in subscriber.requests)
    assert set(received.values()) == {1} and len(received) == 80


def test_sqlite_worker_killed_mid_send_leaves_its_delivery_to_another(tmp_path: Path, subscriber: Receiver) -> None:
    document = with_forward(config_document(tmp_path), subscriber.url)
    subscriber.script.append(Answer(200, drip=0.5))  # the first attempt hangs in the receiver
    gateway = start_gateway(tmp_path, document, "--workers", "2")
    db = tmp_path / "gateway.db"
    try:
        send(gateway, ["SM" + "w" * 32])
        wait_until(lambda: len(subscriber.requests) == 1)
        [(holder,)] = sqlite_rows(db, "SELECT claimed_by FROM deliveries")
        os.kill(int(holder.rpartition(":")[2]), signal.SIGKILL)  # the worker sending it, mid-send
        wait_until(lambda: sqlite_rows(db, "SELECT state FROM deliveries") == [("delivered",)])
        [(sender,)] = sqlite_rows(db, "SELECT claimed_by FROM deliveries")
    finally:
        gateway.stop()
    first, second = subscriber.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 2 * TIMEOUT  # after the lease, not at once
    assert sender != holder
