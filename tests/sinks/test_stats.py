"""/v1/stats' figures over both stores (SQLite and a real PostgreSQL), on hand-built timelines: out
of order, duplicated, unknown words, no `to`, several countries and hours. The expected figures
are computed here from the events themselves, by the rules of SPEC §10, not read from the stores'
rollups.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Reason, Status, StatusEvent, utc_iso
from gateway.sinks import Store
from gateway.sinks.postgres import PostgresSink
from gateway.sinks.sqlite import SQLiteSink
from gateway.stats import Window

pytestmark = pytest.mark.anyio
START = datetime(2026, 3, 1, 22, 0, tzinfo=timezone.utc)
NUMBERS = {"+14155550100": "US", "+16045550100": "CA", "447700900000": "GB", "+33612345678": "FR",
           None: "unknown", "AcmeInc": "unknown", "whatsapp:+5511987654321": "BR"}
FINALS = {"delivered", "undelivered", "failed", "rejected", "expired", "canceled", "read", "partially_delivered"}
REASONS = ["unreachable", "invalid_number", "opted_out", "spam_filtered"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    sink: Store
    if request.param == "sqlite":
        sink = SQLiteSink(str(tmp_path / "store.db"), busy_timeout_ms=2000)
    else:
        sink = PostgresSink(request.getfixturevalue("postgres_dsn"), pool_size=4, folding=False)
    await sink.open()
    yield sink
    await sink.close()


def timelines(seed: int, messages: int = 120) -> list[StatusEvent]:
    """Each message's callbacks, as they would arrive: shuffled within the message, some twice."""
    rng = random.Random(seed)
    events: list[StatusEvent] = []
    for index in range(messages):
        provider = rng.choice(["twilio", "vonage"])
        to = rng.choice(list(NUMBERS))
        endpoint = f"{provider}-{rng.choice(['a', 'b'])}"
        first = START + timedelta(minutes=rng.randrange(0, 60 * 30))  # 30 hours of first sightings
        delay = rng.randrange(1, 4000)
        ending = rng.choice(["delivered", "delivered", "read", "undelivered", "none", "unknown"])
        steps: list[tuple[Status, str, int]] = [(Status.QUEUED, "queued", 0), (Status.SENT, "sent", 1)]
        if ending in ("delivered", "read"):
            steps.append((Status.DELIVERED, "delivered", delay))
        if ending == "read":
            steps.append((Status.READ, "read", delay + 5))
        if ending == "undelivered":
            steps.append((Status.UNDELIVERED, "undelivered", delay))
        if ending == "unknown":
            steps.append((Status.UNKNOWN, "mystery", delay))
        arrivals = steps[:]
        rng.shuffle(arrivals)
        arrivals += [rng.choice(steps)] * rng.randrange(0, 2)  # a provider's retry
        with_provider_time = rng.random() < 0.5
        arrived = 0
        for status, word, at in arrivals:
            reason = Reason(REASONS[index % 4], False) if status is Status.UNDELIVERED else None
            events.append(StatusEvent(
                provider=provider, endpoint=endpoint, message_id=f"m{index}", status=status, provider_status=word,
                to=to, reason=reason,
                # The provider's clock runs 7 s behind ours: times to deliver differ by which is used.
                occurred_at=utc_iso(first + timedelta(seconds=at - 7)) if with_provider_time else None,
                received_at=utc_iso(first + timedelta(seconds=arrived)),  # in arrival order, whatever it says
            ))
            arrived += rng.randrange(1, 900)
    return events


def expected(events: list[StatusEvent], by: str, first_hour: str = "", last_hour: str = "9999",
             ) -> dict[str, dict[str, Any]]:
    """SPEC §10 computed from the events: dedup by id, the current status by precedence, the time to
    deliver from the first sent-or-earlier to the first delivered."""
    unique: dict[str, StatusEvent] = {}
    for event in events:
        unique.setdefault(event.id, event)
    by_message: dict[tuple[str, str], list[StatusEvent]] = {}
    for event in unique.values():
        by_message.setdefault((event.provider, event.message_id), []).append(event)
    groups: dict[str, dict[str, Any]] = {}
    for timeline in by_message.values():
        first_seen = min(e.received_at for e in timeline)
        if not first_hour <= first_seen[:13] <= last_hour:
            continue
        current = timeline[0]
        for event in timeline[1:]:
            if (event.status.rank, event.occurred_at or "", event.received_at) > (
                    current.status.rank, current.occurred_at or "", current.received_at):
                current = event
        first = min(timeline, key=lambda e: e.received_at)
        key = {"provider": current.provider, "endpoint": first.endpoint, "country": NUMBERS[first.to],
               "day": first_seen[:10]}[by]
        group = groups.setdefault(key, {"statuses": Counter(), "reasons": Counter(), "spans": []})
        group["statuses"][current.status.value] += 1
        if current.reason:
            group["reasons"][current.reason.category] += 1
        starts = [e for e in timeline if 1 <= e.status.rank <= 3]
        dones = [e for e in timeline if e.status is Status.DELIVERED]
        if starts and dones:
            start_occ = min((e.occurred_at for e in starts if e.occurred_at), default=None)
            done_occ = min((e.occurred_at for e in dones if e.occurred_at), default=None)
            pair = ((done_occ, start_occ) if start_occ and done_occ else
                    (min(e.received_at for e in dones), min(e.received_at for e in starts)))
            seconds = (datetime.fromisoformat(pair[0].replace("Z", "+00:00"))
                       - datetime.fromisoformat(pair[1].replace("Z", "+00:00"))).total_seconds()
            group["spans"].append(max(0, round(seconds)))
    return groups


def nearest_rank(values: list[int], p: int) -> int | None:
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1] if ordered else None


def bucketed(seconds: int) -> int:
    """The stores keep times to within 10 %: exact below a minute, then 5 s, 1 min, 5 min, 15 min, 1 h."""
    for limit, step in ((60, 1), (600, 5), (3600, 60), (21600, 300), (86400, 900)):
        if seconds < limit:
            return seconds // step * step
    return seconds // 3600 * 3600


def assert_matches(got: list[dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    assert {g["key"] for g in got} == set(want)
    for group in got:
        truth = want[group["key"]]
        statuses = truth["statuses"]
        assert group["statuses"] == dict(statuses), group["key"]
        assert group["messages"] == sum(statuses.values())
        finals = sum(n for s, n in statuses.items() if s in FINALS)
        delivered = statuses["delivered"] + statuses["read"]
        assert group["delivery_rate"] == (round(delivered / finals, 4) if finals else None)
        top = sorted(truth["reasons"].items(), key=lambda item: (-item[1], item[0]))[:5]
        assert [(r["category"], r["messages"]) for r in group["reasons"]] == top
        spans = [bucketed(s) for s in truth["spans"]]
        times = group["time_to_deliver"]
        assert times["messages"] == len(spans)
        assert (times["p50"], times["p90"], times["p99"]) == tuple(nearest_rank(spans, p) for p in (50, 90, 99))


@pytest.mark.parametrize("by", ["provider", "endpoint", "country", "day"])
async def test_figures_match_the_events_by_every_grouping(store: Store, by: str) -> None:
    events = timelines(seed=7)
    for event in events:  # one at a time: each message's rows move through every status it had
        await store.write(event)
    assert_matches(await store.stats(window=Window(), by=by), expected(events, by))


async def test_a_window_and_filters_count_messages_first_seen_in_it(store: Store) -> None:
    events = timelines(seed=11)
    for start in range(0, len(events), 50):  # in batches, as under load
        chunk = events[start:start + 50]
        for future in [store.write(event) for event in chunk]:
            await future
    since, until = START + timedelta(hours=5), START + timedelta(hours=17, minutes=30)
    got = await store.stats(window=Window(since, until), by="provider")
    assert_matches(got, expected(events, "provider", "2026-03-02T03", "2026-03-02T15"))
    only = await store.stats(window=Window(), by="country", provider="vonage")
    assert_matches(only, expected([e for e in events if e.provider == "vonage"], "country"))
    assert await store.stats(window=Window(until=START - timedelta(days=1))) == []


async def test_inbound_messages_are_not_counted(store: Store) -> None:
    inbound = StatusEvent(provider="twilio", endpoint="t", message_id="in1", status=Status.RECEIVED,
                          provider_status="received", to="+14155550100", direction="inbound", text="hi",
                          received_at=utc_iso(START))
    assert await store.write(inbound) is True
    assert await store.stats(window=Window()) == []


async def test_postgres_figures_are_the_same_before_and_after_the_deltas_fold(postgres_dsn: str) -> None:
    store = PostgresSink(postgres_dsn, pool_size=4, folding=False)
    await store.open()
    try:
        events = timelines(seed=3, messages=60)
        for event in events[: len(events) // 2]:
            await store.write(event)
        assert await store.fold() is True
        for event in events[len(events) // 2:]:
            await store.write(event)
        before = await store.stats(window=Window(), by="country")
        assert await store.fold() is True
        assert await store.stats(window=Window(), by="country") == before
        assert_matches(before, expected(events, "country"))
    finally:
        await store.close()


def current_of_each(events: list[StatusEvent]) -> dict[tuple[str, str], StatusEvent]:
    unique: dict[str, StatusEvent] = {}
    for event in events:
        unique.setdefault(event.id, event)
    best: dict[tuple[str, str], StatusEvent] = {}
    for event in unique.values():
        key = (event.provider, event.message_id)
        held = best.get(key)
        if held is None or event.precedence > held.precedence:
            best[key] = event
    return best


async def test_a_sqlite_store_of_schema_5_gets_its_facts_on_upgrade(tmp_path: Path) -> None:
    import sqlite3

    from gateway.sinks import sqlite_db

    events = timelines(seed=5, messages=60)
    path = tmp_path / "old.db"
    conn = sqlite_db.connect(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    for statements in sqlite_db.MIGRATIONS[:5]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    for event in events:  # as schema 5's writer stored them (its trigger kept `messages`)
        conn.execute("INSERT INTO events (id, provider, message_id, status, rank, occurred_at, received_at, body,"
                     " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                     (event.id, event.provider, event.message_id, event.status.value, event.status.rank,
                      event.occurred_at or "", event.received_at, event.dumps(),
                      event.reason.category if event.reason else None))
    conn.close()
    store = SQLiteSink(str(path))
    await store.open()
    try:
        assert_matches(await store.stats(window=Window(), by="country"), expected(events, "country"))
        # and the triggers keep them from then on, for messages of their own
        moved = [replace(e, message_id="new-" + e.message_id, id="") for e in timelines(seed=6, messages=20)]
        for event in moved:
            await store.write(event)
        assert_matches(await store.stats(window=Window(), by="provider"), expected(events + moved, "provider"))
    finally:
        await store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == sqlite_db.SCHEMA_VERSION


async def test_a_postgres_store_of_schema_5_gets_its_facts_on_upgrade(postgres_dsn: str) -> None:
    import asyncpg

    from gateway.sinks import postgres as postgres_module

    events = timelines(seed=5, messages=60)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE status_gateway_schema (version integer NOT NULL)")
        for statements in postgres_module.MIGRATIONS[:5]:
            for statement in statements:
                assert isinstance(statement, str)
                await conn.execute(statement)
        await conn.execute("INSERT INTO status_gateway_schema (version) VALUES (5)")
        unique = {event.id: event for event in reversed(events)}
        await conn.executemany(
            "INSERT INTO events (id, provider, message_id, status, rank, occurred_at, received_at, body, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [(e.id, e.provider, e.message_id, e.status.value, e.status.rank, e.occurred_at or "", e.received_at,
              e.dumps().decode(), e.reason.category if e.reason else None) for e in unique.values()])
        await conn.executemany(  # as schema 5's statement kept it: the current event of each message
            "INSERT INTO messages (provider, message_id, rank, occurred_at, received_at, event_id)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [(e.provider, e.message_id, e.status.rank, e.occurred_at or "", e.received_at, e.id)
             for e in current_of_each(events).values()])
    finally:
        await conn.close()
    store = PostgresSink(postgres_dsn, pool_size=2, folding=False)
    await store.open()
    try:
        assert_matches(await store.stats(window=Window(), by="country"), expected(events, "country"))
    finally:
        await store.close()


@pytest.mark.parametrize(("since", "until", "first", "last"), [
    (1, 27, "2026-03-01T23", "2026-03-03T01"),  # a partial day, a whole day, a partial day
    (3, None, "2026-03-02T01", "9999"),
    (None, 20, "", "2026-03-02T18"),
])
async def test_windows_across_days_read_hours_at_the_edges_and_days_between(
        store: Store, since: int | None, until: int | None, first: str, last: str) -> None:
    events = timelines(seed=13)
    for event in events:
        await store.write(event)
    window = Window(START + timedelta(hours=since) if since is not None else None,
                    START + timedelta(hours=until, minutes=59) if until is not None else None)
    assert_matches(await store.stats(window=window, by="day"), expected(events, "day", first, last))


def test_a_window_is_read_as_edge_hours_and_whole_days() -> None:
    at = datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc)
    assert Window(at, at + timedelta(days=2, hours=1)).pieces() == [
        ("hour", "2026-03-01T23", "2026-03-01T23"), ("hour", "2026-03-04T00", "2026-03-04T00"),
        ("day", "2026-03-02", "2026-03-03")]
    assert Window().pieces() == [("day", "", "9999")]
    assert Window(at, at).pieces() == [("hour", "2026-03-01T23", "2026-03-01T23")]
    assert Window(at, at - timedelta(hours=2)).pieces() == []
