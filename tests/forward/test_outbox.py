"""The outbox in each store (SQLite and a real PostgreSQL): a delivery row per matching subscription,
written in the event's own transaction; none for a retry; data.current as the write left it; and a
store of the previous schema upgrades in place."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import orjson
import pytest
import standardwebhooks
import yaml

from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import load_config
from gateway.forward.outbox import Outbox, delivery_id
from gateway.forward.payload import with_current
from gateway.forward.settings import Subscription
from gateway.forward.signing import headers
from gateway.model import Fragment, Status, StatusEvent, Unread
from gateway.sinks import Store
from gateway.sinks.base import Attempt, current_json
from gateway.sinks.base import Outbox as OutboxStore
from gateway.sinks import postgres as postgres_module
from gateway.sinks import sqlite_db
from gateway.sinks.postgres import PostgresSink
from gateway.sinks.sqlite import SQLiteSink
from tests.conftest import ENV, PUBLIC_URL, clock, config_document
from tests.signing import TWILIO_PATH, twilio_fields, twilio_request

pytestmark = pytest.mark.anyio
SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
SUBSCRIPTIONS = [
    Subscription.model_validate({"name": "all", "url": "https://a.example/h", "secret": SECRET}),
    Subscription.model_validate({"name": "finals", "url": "https://b.example/h", "secret": SECRET,
                                 "final_only": True, "include_raw": True}),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    sink: Store
    if request.param == "sqlite":
        sink = SQLiteSink(str(tmp_path / "store.db"), parts=[Outbox(SUBSCRIPTIONS)])
    else:
        sink = PostgresSink(request.getfixturevalue("postgres_dsn"), pool_size=4, parts=[Outbox(SUBSCRIPTIONS)])
    await sink.open()
    yield sink
    await sink.close()


async def deliveries(store: Store) -> list[tuple[Any, ...]]:
    sql = "SELECT id, subscription, event_id, body, current, state, attempts FROM deliveries ORDER BY created_at, id"
    if isinstance(store, SQLiteSink):
        return [tuple(row) for row in sqlite3.connect(store.path).execute(sql)]
    conn = await asyncpg.connect(store._dsn)
    try:
        return [tuple(record) for record in await conn.fetch(sql)]
    finally:
        await conn.close()


def request_body(row: tuple[Any, ...]) -> bytes:
    """What the dispatcher will send for a delivery row: its body with its current status."""
    body, current = row[3], row[4]
    return with_current(body.encode() if isinstance(body, str) else body, current.encode())


def event(status: Status, at: int) -> StatusEvent:
    return StatusEvent(provider="twilio", endpoint="twilio-main", message_id="SM1", status=status,
                       provider_status=status.value, received_at=f"2026-01-01T00:00:0{at}.000000Z",
                       raw={"MessageSid": "SM1"})


async def test_each_matching_subscription_gets_one_delivery_and_a_retry_adds_none(store: Store) -> None:
    sent, delivered = event(Status.SENT, 1), event(Status.DELIVERED, 2)
    assert await store.write(sent) is True
    assert await asyncio.gather(store.write(delivered), store.write(delivered)) == [True, False]
    assert await store.write(event(Status.DELIVERED, 2)) is False  # the provider's retry, later
    rows = await deliveries(store)
    assert sorted((row[1], row[2]) for row in rows) == sorted(
        [("all", sent.id), ("all", delivered.id), ("finals", delivered.id)])
    assert all(row[5:] == ("pending", 0) for row in rows)
    received = {sent.id: sent.received_at, delivered.id: delivered.received_at}
    assert {row[0] for row in rows} == {delivery_id(row[1], row[2], received[row[2]]) for row in rows}
    # In arrival order, so new rows append to the id index: the later event's ids sort after.
    assert max(row[0] for row in rows if row[2] == sent.id) < min(row[0] for row in rows if row[2] == delivered.id)


async def test_data_current_is_the_status_the_write_left_and_the_request_verifies(store: Store) -> None:
    delivered, late_sent = event(Status.DELIVERED, 1), event(Status.SENT, 2)
    await store.write(delivered)
    await store.write(late_sent)  # arrives late: the message stays delivered
    rows = {(row[1], row[2]): row for row in await deliveries(store)}
    body = request_body(rows[("all", late_sent.id)])
    sent = orjson.loads(body)
    assert sent["type"] == "message.status.sent"
    assert sent["data"]["current"] == {"status": "delivered", "final": True, "updated_at": delivered.received_at}
    assert "raw" not in sent["data"]
    # Made in SQL by SQLite, in Python by PostgreSQL: the same bytes as current_json().
    assert rows[("all", late_sent.id)][4] == current_json("delivered", delivered.received_at)
    assert rows[("all", delivered.id)][4] == current_json("delivered", delivered.received_at)
    assert orjson.loads(request_body(rows[("finals", delivered.id)]))["data"]["raw"] == {"MessageSid": "SM1"}
    # What the dispatcher will send verifies with the Standard Webhooks library.
    sent_headers = headers(late_sent.id, int(time.time()), body, [SUBSCRIPTIONS[0].secret[0]])
    assert standardwebhooks.Webhook(SECRET).verify(body, sent_headers)["data"]["id"] == late_sent.id


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
async def test_a_store_of_an_earlier_schema_upgrades_in_place(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    conn = sqlite_db.connect(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    for statements in sqlite_db.MIGRATIONS[:version]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    old = event(Status.SENT, 1)
    conn.execute("INSERT INTO events (id, provider, message_id, status, rank, occurred_at, received_at, body)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (old.id, old.provider, old.message_id, "sent", 3, "",
                                                     old.received_at, old.dumps()))
    if version == 2:  # a delivery of version 2, with its id of that version (a hash alone)
        conn.execute("INSERT INTO deliveries (id, subscription, event_id, provider, message_id, body, current, state,"
                     " attempts, next_at, created_at) VALUES ('0f' || hex(randomblob(15)), 'all', ?, 'twilio', 'SM1',"
                     " '{}', '', 'pending', 0, ?, ?)", (old.id, old.received_at, old.received_at))
    conn.close()
    store = SQLiteSink(str(path), parts=[Outbox(SUBSCRIPTIONS)])
    await store.open()
    try:
        assert [e.id for e in await store.timeline("twilio", "SM1")] == [old.id]
        assert await store.write(event(Status.DELIVERED, 2)) is True
        assert len(await deliveries(store)) == 2 + (version == 2)  # all and finals, and the old one
        listed = await store.deliveries(message_id="SM1")
        assert sorted(d["event_id"] for d in listed) == sorted(row[2] for row in await deliveries(store))
        part = Fragment(group="g", id="p1", number=1, total=1, fields={"text": "x"}, received_at=old.received_at)
        assert await store.keep_part("sms", "vonage", part) is not None  # schema 4
    finally:
        await store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == sqlite_db.SCHEMA_VERSION == 7


async def test_a_postgres_store_of_the_previous_schema_upgrades_in_place(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE status_gateway_schema (version integer NOT NULL)")
        for statement in postgres_module.MIGRATIONS[0]:
            await conn.execute(statement)
        await conn.execute("INSERT INTO status_gateway_schema (version) VALUES (1)")
    finally:
        await conn.close()
    store = PostgresSink(postgres_dsn, pool_size=2, parts=[Outbox(SUBSCRIPTIONS)])
    await store.open()
    try:
        assert await store.write(event(Status.DELIVERED, 2)) is True
        assert len(await deliveries(store)) == 2
        assert await store.keep_unread("v", "vonage", Unread("new", {"a": 1}), "2026-01-01T00:00:00.000000Z")
    finally:
        await store.close()


def test_an_acknowledged_callback_has_its_deliveries_and_its_retry_adds_none(tmp_path: Path) -> None:
    """Through the whole app: the 200 comes after the event and its delivery rows committed together."""
    document = config_document(tmp_path)
    document["forward"] = {"subscriptions": [
        {"name": "crm", "url": "https://crm.example.com/h", "secret": SECRET, "providers": ["twilio"]}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    with TestClient(create_app(load_config(tmp_path / "config.yaml", ENV), clock=clock), base_url=PUBLIC_URL) as c:
        headers_, body_ = twilio_request(twilio_fields("delivered"))
        for _ in range(2):  # the callback and Twilio's retry of it
            assert c.post(TWILIO_PATH, headers=headers_, content=body_).status_code == 200
    rows = sqlite3.connect(tmp_path / "gateway.db").execute("SELECT subscription, state FROM deliveries").fetchall()
    assert rows == [("crm", "pending")]


async def test_claim_finish_list_and_redeliver(store: Store) -> None:
    outbox = cast(OutboxStore, store)
    delivered = event(Status.DELIVERED, 2)
    await store.write(delivered)
    now = "2026-01-01T00:00:05.000000Z"
    claimed = await outbox.claim(now=now, lease_until="2026-01-01T00:01:00.000000Z", limit=10, by="test:1")
    assert sorted(c.subscription for c in claimed) == ["all", "finals"]
    assert await outbox.claim(now=now, lease_until="2026-01-01T00:01:00.000000Z", limit=10, by="test:2") == []
    first = next(c for c in claimed if c.subscription == "all")
    assert (first.event_id, first.attempts, first.schedule_from) == (delivered.id, 0, 0)
    await outbox.finish(Attempt(first.id, 1, now, 200, None, 12.5, "delivered", now))
    await outbox.release([c.id for c in claimed if c is not first])
    listed = await outbox.deliveries(state="delivered")
    assert [(d["id"], d["claimed_by"], d["attempts"]) for d in listed] == [(first.id, "test:1", 1)]
    assert [d["subscription"] for d in await outbox.deliveries(state="pending")] == ["finals"]
    detail = await outbox.delivery(first.id)
    assert detail is not None and detail["history"] == [
        {"attempt": 1, "at": now, "http_status": 200, "error": None, "duration_ms": 12.5}]
    assert await outbox.delivery("nope") is None
    assert await outbox.redeliver(ids=[first.id], now=now) == [first.id]
    again = await outbox.claim(now=now, lease_until="2026-01-01T00:01:00.000000Z", limit=10, by="test:1")
    assert {(c.id, c.attempts, c.schedule_from) for c in again if c.id == first.id} == {(first.id, 1, 1)}
    assert sorted(await outbox.redeliver(subscription="finals", since="2026-01-01T00:00:00Z", now=now)) == [
        c.id for c in claimed if c.subscription == "finals"]
