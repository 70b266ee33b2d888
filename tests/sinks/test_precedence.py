"""Precedence (docs/events.md), decided in SQL by each store, against the Python rule (model.current_of) as the
oracle: random callbacks of one message, arriving in random order, with retries, in random batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.model import Status, StatusEvent, current_of
from gateway.sinks import Store
from gateway.sinks.postgres import PostgresSink
from gateway.sinks.sqlite import SQLiteSink

# A callback: (normalized status, provider word, carrier time or none). Few times, so ties happen.
CALLBACKS = st.tuples(st.sampled_from(list(Status)), st.sampled_from(["a", "b"]),
                      st.one_of(st.none(), st.integers(0, 3)))
# Arrivals: which callback comes (an index, so retries repeat one) and whether it joins the batch
# before it (sent together, committed in one transaction) or starts a new one.
ARRIVALS = st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=14)


@pytest.fixture(params=["sqlite", "postgres"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[asyncio.Runner, Store]]:
    """One store for the whole property run (each example writes its own message), on one loop."""
    store: Store
    if request.param == "sqlite":
        store = SQLiteSink(str(tmp_path / "store.db"))
    else:
        store = PostgresSink(request.getfixturevalue("postgres_dsn"), pool_size=4)
    with asyncio.Runner() as runner:
        runner.run(store.open())
        yield runner, store
        runner.run(store.close())


def test_each_store_keeps_the_current_status_the_python_rule_picks(running: tuple[asyncio.Runner, Store]) -> None:
    runner, store = running

    @given(callbacks=st.lists(CALLBACKS, min_size=1, max_size=6), arrivals=ARRIVALS)
    def check(callbacks: list[tuple[Status, str, int | None]], arrivals: list[tuple[int, bool]]) -> None:
        message = f"SM{uuid.uuid4().hex}"
        batches: list[list[StatusEvent]] = []
        for at, (index, joins) in enumerate(arrivals):
            status, word, occurred = callbacks[index % len(callbacks)]
            arrived = StatusEvent(
                provider="twilio", endpoint="main", message_id=message, status=status,
                provider_status=f"{status.value}-{word}",
                occurred_at=f"2026-01-01T00:00:0{occurred}.000000Z" if occurred is not None else None,
                received_at=f"2026-01-01T00:01:{at:02d}.000000Z")  # a retry arrives later, same id
            if joins and batches:
                batches[-1].append(arrived)
            else:
                batches.append([arrived])

        async def deliver() -> list[bool]:
            answers: list[bool] = []
            for batch in batches:  # a batch: written at once, so the store commits it together
                answers += await asyncio.gather(*(store.write(event) for event in batch))
            return answers

        answers = runner.run(deliver())
        arrived_in_order = [event for batch in batches for event in batch]
        first_of_each: dict[str, StatusEvent] = {}
        for event in arrived_in_order:
            first_of_each.setdefault(event.id, event)
        # A retry is stored once: the first arrival of each id, and only it, is new.
        assert answers == [first_of_each[e.id] is e for e in arrived_in_order]
        timeline = runner.run(store.timeline("twilio", message))
        assert [e.id for e in timeline] == list(first_of_each)
        expected = current_of(first_of_each.values())
        current = runner.run(store.current("twilio", message))
        assert current is not None and expected is not None
        assert (current.id, current.received_at) == (expected.id, expected.received_at)

    check()
