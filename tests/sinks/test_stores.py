"""One suite over every store (SQLite and a real PostgreSQL): dedup, precedence, timeline, recent,
group commit and its failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import asyncpg

from gateway.errors import SinkUnavailable
from gateway.model import Refused, Fragment, Reason, Status, StatusEvent, Unread
from gateway.sinks import Store
from gateway.sinks.base import Rows
from gateway.sinks import postgres as postgres_module
from gateway.sinks.postgres import PostgresSink
from gateway.sinks.sqlite import SQLiteSink

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteSink]:
    sink = SQLiteSink(str(tmp_path / "store.db"), busy_timeout_ms=200)
    await sink.open()
    yield sink
    await sink.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    sink: Store
    if request.param == "sqlite":
        sink = SQLiteSink(str(tmp_path / "store.db"), busy_timeout_ms=200)
    else:
        sink = PostgresSink(request.getfixturevalue("postgres_dsn"), pool_size=4)
    await sink.open()
    yield sink
    await sink.close()


async def count(store: Store, sql: str) -> int:
    """A count straight from the database, through a connection of its own."""
    if isinstance(store, SQLiteSink):
        return int(sqlite3.connect(store.path).execute(sql).fetchone()[0])
    conn = await asyncpg.connect(store._dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def event(status: Status, word: str, *, message: str = "SM1", at: int = 0, occurred: int | None = None,
          provider: str = "twilio", **extra: Any) -> StatusEvent:
    return StatusEvent(
        provider=provider, endpoint="main", message_id=message, status=status, provider_status=word,
        occurred_at=f"2026-01-01T00:00:{occurred:02d}.000000Z" if occurred is not None else None,
        received_at=f"2026-01-01T00:01:{at:02d}.000000Z", **extra,
    )


SENT, DELIVERED = event(Status.SENT, "sent", at=1), event(Status.DELIVERED, "delivered", at=2)


async def test_a_retry_is_stored_once(store: Store) -> None:
    assert await store.write(SENT) is True
    assert await store.write(event(Status.SENT, "sent", at=9)) is False  # same callback, later arrival
    assert [e.id for e in await store.timeline("twilio", "SM1")] == [SENT.id]


async def test_late_sent_stays_in_the_timeline_but_not_the_status(store: Store) -> None:
    late_sent = event(Status.SENT, "sent", at=3)
    for e in (DELIVERED, late_sent):
        await store.write(e)
    assert (await store.current("twilio", "SM1")) == DELIVERED
    assert [e.status for e in await store.timeline("twilio", "SM1")] == [Status.DELIVERED, Status.SENT]


async def test_unknown_never_replaces_a_known_status(store: Store) -> None:
    await store.write(event(Status.UNKNOWN, "brand_new", at=1))
    assert (await store.current("twilio", "SM1")).status is Status.UNKNOWN  # type: ignore[union-attr]
    await store.write(SENT)
    await store.write(event(Status.UNKNOWN, "brand_newer", at=5))
    assert (await store.current("twilio", "SM1")) == SENT


async def test_equal_ranks_go_to_the_later_occurrence(store: Store) -> None:
    delivered = event(Status.DELIVERED, "delivered", at=1, occurred=30)
    older_failure = event(Status.UNDELIVERED, "undelivered", at=2, occurred=10)
    await store.write(delivered)
    await store.write(older_failure)
    assert (await store.current("twilio", "SM1")) == delivered
    newer_read = event(Status.READ, "read", at=3, occurred=5)
    await store.write(newer_read)
    assert (await store.current("twilio", "SM1")) == newer_read  # a higher rank wins whatever its time


async def test_messages_are_kept_apart_by_provider(store: Store) -> None:
    await store.write(SENT)
    await store.write(event(Status.DELIVERED, "delivered", provider="vonage"))
    assert (await store.current("twilio", "SM1")) == SENT
    assert await store.current("twilio", "SM404") is None


async def test_recent_filters_and_orders_newest_first(store: Store) -> None:
    events = [event(Status.SENT, "sent", message=f"SM{i}", at=i) for i in range(5)]
    events.append(event(Status.DELIVERED, "delivered", message="V1", at=6, provider="vonage"))
    for e in events:
        await store.write(e)
    recent = [e for _, e in await store.recent(limit=3)]
    assert recent == events[::-1][:3]
    assert [e for _, e in await store.recent(provider="vonage")] == [events[5]]
    assert [e for _, e in await store.recent(status=Status.DELIVERED)] == [events[5]]
    since = datetime(2026, 1, 1, 0, 1, 3, tzinfo=timezone.utc)
    assert [e.message_id for _, e in await store.recent(since=since)] == ["V1", "SM4", "SM3"]
    newest_seq = (await store.recent(limit=1))[0][0]
    assert await store.recent(after_seq=newest_seq) == []


async def test_concurrent_writes_share_commits_and_keep_every_answer(store: Store) -> None:
    events = [event(Status.SENT, "sent", message=f"SM{i}", at=i % 60) for i in range(600)]
    results = await asyncio.gather(*(store.write(e) for e in events + events[:50]))
    assert results.count(True) == 600 and results.count(False) == 50
    assert await count(store, "SELECT count(*) FROM events") == 600
    assert await count(store, "SELECT count(*) FROM messages") == 600


async def test_one_batch_with_a_message_s_whole_story_keeps_the_best_status(store: Store) -> None:
    story = [event(Status.SENT, "sent", at=1), DELIVERED, event(Status.SENT, "sent", at=3),
             event(Status.QUEUED, "queued", at=4), DELIVERED]
    results = await asyncio.gather(*(store.write(e) for e in story))  # one loop turn: one batch
    assert results == [True, True, False, True, False]
    assert await store.current("twilio", "SM1") == DELIVERED
    assert [e.status for e in await store.timeline("twilio", "SM1")] == [
        Status.SENT, Status.DELIVERED, Status.QUEUED]


async def test_a_failed_batch_refuses_all_of_its_requests_and_stores_nothing(sqlite_store: SQLiteSink) -> None:
    store = sqlite_store
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    events = [event(Status.SENT, "sent", message=f"SM{i}") for i in range(20)]
    results = await asyncio.gather(*(store.write(e) for e in events), return_exceptions=True)
    assert all(isinstance(r, SinkUnavailable) for r in results)
    blocker.execute("ROLLBACK")
    assert blocker.execute("SELECT count(*) FROM events").fetchone() == (0,)
    assert await store.write(events[0]) is True  # recovers without a restart


async def test_a_failed_postgres_batch_refuses_its_requests_and_recovers(
        postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_module, "TIMEOUT", 0.5)
    store = PostgresSink(postgres_dsn, pool_size=2)
    await store.open()
    blocker = await asyncpg.connect(postgres_dsn)
    try:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        events = [event(Status.SENT, "sent", message=f"SM{i}") for i in range(20)]
        results = await asyncio.gather(*(store.write(e) for e in events), return_exceptions=True)
        assert all(isinstance(r, SinkUnavailable) for r in results)
        await locked.rollback()
        assert await blocker.fetchval("SELECT count(*) FROM events") == 0
        assert await store.write(events[0]) is True  # recovers without a restart
    finally:
        await blocker.close()
        await store.close()


async def test_an_answer_means_the_event_is_committed(store: Store) -> None:
    assert await store.write(SENT)
    # another connection sees it at once: it is committed
    assert await count(store, f"SELECT count(*) FROM events WHERE id = '{SENT.id}'") == 1


async def test_close_commits_what_was_queued(store: Store) -> None:
    writes = [store.write(event(Status.SENT, "sent", message=f"SM{i}")) for i in range(300)]
    await store.close()  # right away: nothing was committed yet
    assert all(write.result() for write in writes)
    assert await count(store, "SELECT count(*) FROM events") == 300


async def test_ready_is_false_while_the_file_cannot_be_written(sqlite_store: SQLiteSink) -> None:
    store = sqlite_store
    assert await store.ready()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    assert not await store.ready()
    blocker.execute("ROLLBACK")
    assert await store.ready()


# --- a Part's rows commit in the event's own transaction -------------------------------------------

class NotePart:
    """Adds one row per event to `table`, as the forwarding outbox will: a real Part, no mock."""

    def __init__(self, table: str = "notes") -> None:
        self.table = table

    def rows(self, event: StatusEvent) -> list[Rows]:
        return [Rows(self.table, ("event_id", "note"), ((event.id, event.provider_status),))]


@pytest.fixture(params=["sqlite", "postgres"])
def open_with_part(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[NotePart], AsyncIterator[Store]]:
    @asynccontextmanager
    async def open_store(part: NotePart) -> AsyncIterator[Store]:
        sink: Store
        if request.param == "sqlite":
            sink = SQLiteSink(str(tmp_path / "store.db"), busy_timeout_ms=200, parts=[part])
        else:
            sink = PostgresSink(request.getfixturevalue("postgres_dsn"), pool_size=4, parts=[part])
        await sink.open()
        await execute(sink, "CREATE TABLE notes (event_id text NOT NULL, note text NOT NULL)")
        try:
            yield sink
        finally:
            await sink.close()

    return open_store  # type: ignore[return-value]


async def execute(store: Store, sql: str) -> None:
    if isinstance(store, SQLiteSink):
        sqlite3.connect(store.path, isolation_level=None).execute(sql)
        return
    conn = await asyncpg.connect(store._dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_parts_rows_come_with_each_new_event_and_never_with_a_retry(
        open_with_part: Callable[[NotePart], Any]) -> None:
    async with open_with_part(NotePart()) as store:
        assert await store.write(SENT) is True
        assert await store.write(event(Status.SENT, "sent", at=9)) is False  # the retry
        # One batch: a new event, the retry of it, and another new one.
        late = event(Status.READ, "read", at=11)
        answers = await asyncio.gather(store.write(DELIVERED), store.write(DELIVERED), store.write(late))
        assert answers == [True, False, True]
        assert await count(store, "SELECT count(*) FROM notes") == 3
        assert await count(store, "SELECT count(*) FROM notes WHERE note = 'delivered'") == 1


async def test_an_event_whose_parts_rows_fail_is_not_stored_either(open_with_part: Callable[[NotePart], Any]) -> None:
    async with open_with_part(NotePart(table="no_such_table")) as store:
        with pytest.raises(SinkUnavailable):
            await store.write(SENT)
        assert await count(store, "SELECT count(*) FROM events") == 0
        assert await store.current("twilio", "SM1") is None


# --- kept callbacks: unread kinds and parts of a message --------------------------------------------

def fragment(number: int, total: int = 3, group: str = "k\x1f447700900001\x1f1", message: str = "A") -> Fragment:
    return Fragment(group=group, id=f"{message}{number}", number=number, total=total,
                    fields={"concat-part": str(number), "text": f"{message} part {number}"},
                    received_at=f"2026-01-01T00:02:{number:02d}.000000Z")


async def test_parts_are_complete_only_with_every_number_and_a_retry_adds_nothing(store: Store) -> None:
    assert await store.keep_part("sms", "vonage", fragment(3)) is None
    assert await store.keep_part("sms", "vonage", fragment(1)) is None
    assert await store.keep_part("sms", "vonage", fragment(1)) is None  # the provider's retry of a kept part
    assert await store.keep_part("other-endpoint", "vonage", fragment(2)) is None  # another endpoint's group
    parts = await store.keep_part("sms", "vonage", fragment(2))
    assert parts is not None and [(p.number, p.id, p.fields["text"]) for p in parts] == [
        (1, "A1", "A part 1"), (2, "A2", "A part 2"), (3, "A3", "A part 3")]
    assert [p.received_at for p in parts] == [fragment(n).received_at for n in (1, 2, 3)]
    # Until the message is stored and its parts forgotten (a crash may come between), a retry
    # finds the same parts, and so makes the same event.
    assert await store.keep_part("sms", "vonage", fragment(3)) == parts
    await store.forget_parts("sms", parts)
    assert await store.keep_part("sms", "vonage", fragment(2)) == []  # a late retry: its message is stored
    # A later message that reuses the group (concat-ref is one byte) starts afresh.
    again = [await store.keep_part("sms", "vonage", fragment(n, message="B")) for n in (2, 1, 3)]
    assert again[:2] == [None, None] and again[2] is not None
    assert [p.fields["text"] for p in again[2]] == ["B part 1", "B part 2", "B part 3"]
    assert await store.unread() == []


async def test_a_new_message_taking_an_unfinished_groups_place_keeps_the_old_parts_as_unread(store: Store) -> None:
    assert await store.keep_part("sms", "vonage", fragment(1, message="A")) is None
    assert await store.keep_part("sms", "vonage", fragment(3, message="A")) is None
    assert await store.keep_part("sms", "vonage", fragment(1, message="B")) is None  # A never got its part 2
    (kept,) = await store.unread()
    assert (kept["endpoint"], kept["provider"]) == ("sms", "vonage")
    assert [p["text"] for p in kept["fields"]["parts"]] == ["A part 1", "A part 3"]
    # A late retry of one of A's parts is known: it does not slip into B's message.
    assert await store.keep_part("sms", "vonage", fragment(3, message="A")) == []
    assert await store.keep_part("sms", "vonage", fragment(2, message="B")) is None
    done = await store.keep_part("sms", "vonage", fragment(3, message="B"))
    assert done is not None and [p.id for p in done] == ["B1", "B2", "B3"]


async def test_forgetting_a_stored_message_leaves_a_new_message_in_its_group_alone(store: Store) -> None:
    a = [await store.keep_part("sms", "vonage", fragment(n, total=2, message="A")) for n in (1, 2)][1]
    assert a is not None
    # Before A's parts are forgotten, B takes the group: A's parts go aside (kept), B's first stays.
    assert await store.keep_part("sms", "vonage", fragment(1, total=2, message="B")) is None
    await store.forget_parts("sms", a)
    b = await store.keep_part("sms", "vonage", fragment(2, total=2, message="B"))
    assert b is not None and [p.id for p in b] == ["B1", "B2"]


async def test_parts_kept_at_once_complete_the_group_exactly_once(store: Store, tmp_path: Path) -> None:
    """Two processes (SQLite workers, PostgreSQL replicas) each keeping parts of one message at once."""
    other: Store = (SQLiteSink(store.path, busy_timeout_ms=2000) if isinstance(store, SQLiteSink)
                    else PostgresSink(store._dsn, pool_size=4))
    await other.open()
    try:
        for round_ in range(5):
            group = f"round-{round_}"
            results = await asyncio.gather(*(
                (store if number % 2 else other).keep_part("sms", "vonage", fragment(number, total=8, group=group))
                for number in range(1, 9)))
            assert sum(result is not None for result in results) == 1
    finally:
        await other.close()


async def test_an_unread_callback_is_kept_once_and_listed(store: Store) -> None:
    unread = Unread("a Vonage inbound message of message_type location", {"message_uuid": "u1", "location": {"lat": 1}})
    assert await store.keep_unread("vonage-main", "vonage", unread, "2026-01-01T00:03:00.000000Z") is True
    assert await store.keep_unread("vonage-main", "vonage", unread, "2026-01-01T00:03:09.000000Z") is False
    assert await store.keep_unread("vonage-other", "vonage", unread, "2026-01-01T00:03:10.000000Z") is True
    listed = await store.unread(endpoint="vonage-main")
    assert [(u["kind"], u["fields"], u["received_at"]) for u in listed] == [
        (unread.kind, unread.fields, "2026-01-01T00:03:00.000000Z")]
    assert len(await store.unread()) == 2


async def test_recent_filters_by_reason_category(store: Store) -> None:
    unreachable = event(Status.UNDELIVERED, "undelivered", message="SM7", at=3, error_code="30003",
                        reason=Reason("unreachable", False, "Unreachable destination handset"))
    opted_out = event(Status.FAILED, "failed", message="SM8", at=4, error_code="21610",
                      reason=Reason("opted_out", True, "Attempt to send to unsubscribed recipient"))
    for stored in (SENT, unreachable, opted_out):
        assert await store.write(stored) is True
    assert [e.id for _, e in await store.recent(reason="opted_out")] == [opted_out.id]
    assert [e.reason for _, e in await store.recent(reason="unreachable")] == [unreachable.reason]
    assert await store.recent(reason="blocked") == []


def refused_record(index: int, *, endpoint: str = "twilio-main", pad: int = 0) -> Refused:
    body = f"MessageSid=SM{index:032d}&Pad={'x' * pad}".encode()
    headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": "Zm9yZ2Vk"}
    return Refused(id=Refused.key(endpoint, "POST", "https://gw.example.com/t", headers, body), endpoint=endpoint,
                   provider="twilio", code="invalid_signature", detail="signature does not match", method="POST",
                   url="https://gw.example.com/t", query="", headers=headers, body=body,
                   received_at=f"2031-05-17T09:30:{index:02d}.000000Z")


async def test_the_quarantine_keeps_the_newest_of_each_endpoint_within_its_bounds(store: Store) -> None:
    first = [refused_record(i) for i in range(30)]
    await store.quarantine(first[:20], max_count=10, max_bytes=1 << 20)
    await store.quarantine([*first[20:], first[25]], max_count=10, max_bytes=1 << 20)  # one twice: kept once
    await store.quarantine([refused_record(0, endpoint="vonage-main")], max_count=10, max_bytes=1 << 20)
    kept = await store.refused(endpoint="twilio-main")
    assert [r.id for r in kept] == [r.id for r in reversed(first[20:])]
    assert kept[0] == first[-1]  # read back whole: headers, body bytes, times
    assert {(c["endpoint"], c["count"]) for c in await store.refused_counts()} == {("twilio-main", 10),
                                                                                   ("vonage-main", 1)}
    big = [refused_record(i, pad=1000) for i in range(40, 50)]
    await store.quarantine(big, max_count=10, max_bytes=3 * big[0].size)
    assert [r.id for r in await store.refused(endpoint="twilio-main")] == [r.id for r in reversed(big[-3:])]
    await store.forget_refused([big[-1].id])
    assert [r.id for r in await store.refused(ids=[big[-1].id, big[-2].id])] == [big[-2].id]
    since = await store.refused(endpoint="twilio-main", since="2031-05-17T09:30:48.000000Z")
    assert [r.id for r in since] == [big[-2].id]
