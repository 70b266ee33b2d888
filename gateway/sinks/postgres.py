"""PostgresSink: one store shared by many gateway replicas, with the guarantees of the SQLite one.

Dedup and precedence are decided by PostgreSQL in the statement that stores a batch, so replicas
cannot race: a retry that lands on two replicas at once is stored once (the unique index makes the
second insert wait for the first and then do nothing), and `ON CONFLICT DO UPDATE … WHERE` moves a
message's current status only forward, re-checked against the latest committed row.

Events are batched like the SQLite sink's: every event that arrives while a batch is being
committed goes into the next one; up to pool_size batches are in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from gateway.country import UNKNOWN as UNKNOWN_COUNTRY
from gateway.country import country_of
from gateway.errors import SinkUnavailable
from gateway.model import Fragment, Refused, StatusEvent, Unread, utc_iso
from gateway.sinks import postgres_stats as stats_schema
from gateway.sinks.base import Attempt, Claimed, Part, Rows, current_json, rows_by_table
from gateway.sinks.batch import Batcher, Observe, reason
from gateway.sinks.sql import (
    KeptSQL,
    OutboxSQL,
    RefusedSQL,
    SQLReads,
    abandoned,
    complete,
    delivery_json,
    finish_params,
    first_occurrences,
    first_times,
    part_params,
    parts_of,
    refused_counts,
    refused_of,
    refused_params,
    unread_json,
    unread_params,
)

T = TypeVar("T")
if TYPE_CHECKING:  # generic only in the stubs
    Connection = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
OUTBOX = OutboxSQL("$", lock=" FOR UPDATE SKIP LOCKED")
KEPT = KeptSQL("$")
REFUSED = RefusedSQL("$")
TIMEOUT = 5.0  # seconds for a connection or a statement before the callback is answered 503
# A whole batch, /readyz probe or read (acquire, statement, release), whatever the server or the link
# does meanwhile: asyncpg's own timeouts each bound one step, and a dead link can stall a step between.
DEADLINE = 3 * TIMEOUT
FOLD_EVERY = 1.0  # seconds between folds of the stats' deltas
MIGRATION_LOCK = 0x5354_4757  # pg_advisory_xact_lock key: replicas starting together migrate one at a time



async def _fill_countries(conn: Connection) -> None:
    """The country of each message stored before schema 6, by phonenumbers (not SQL)."""
    rows = [(r[0], r[1], country_of(r[2])) for r in await conn.fetch(stats_schema.TO_OF_MESSAGES)]
    await conn.executemany(stats_schema.SET_COUNTRY, [row for row in rows if row[2] != UNKNOWN_COUNTRY])


# Each entry brings the schema from its index to the next version (table status_gateway_schema);
# a step that is not SQL is a coroutine function run on the migration's connection.
MIGRATIONS: list[list[str | Callable[[Connection], Awaitable[None]]]] = [
    [
        """CREATE TABLE events (
            seq bigserial PRIMARY KEY,
            id text NOT NULL UNIQUE,
            provider text NOT NULL,
            message_id text NOT NULL,
            status text NOT NULL,
            rank integer NOT NULL,
            occurred_at text NOT NULL,
            received_at text NOT NULL,
            body text NOT NULL
        )""",
        "CREATE INDEX events_by_message ON events (provider, message_id, seq)",
        """CREATE TABLE messages (
            provider text NOT NULL,
            message_id text NOT NULL,
            rank integer NOT NULL,
            occurred_at text NOT NULL,
            received_at text NOT NULL,
            event_id text NOT NULL,
            PRIMARY KEY (provider, message_id)
        )""",
        "CREATE TABLE heartbeat (id integer PRIMARY KEY, at text NOT NULL)",
    ],
    [  # 2: the forwarding outbox, one row per (subscription, event), written with the event
        """CREATE TABLE deliveries (
            id text PRIMARY KEY,
            subscription text NOT NULL,
            event_id text NOT NULL,
            provider text NOT NULL,
            message_id text NOT NULL,
            body text NOT NULL,
            current text NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL,
            next_at text NOT NULL,
            lease_until text,
            claimed_by text,
            schedule_from integer NOT NULL DEFAULT 0,
            created_at text NOT NULL
        )""",
        "CREATE INDEX deliveries_due ON deliveries (state, next_at)",
        "CREATE INDEX deliveries_by_message ON deliveries (provider, message_id)",
        """CREATE TABLE attempts (
            delivery_id text NOT NULL,
            attempt integer NOT NULL,
            at text NOT NULL,
            http_status integer,
            error text,
            duration_ms double precision NOT NULL,
            PRIMARY KEY (delivery_id, attempt)
        )""",
        # A subscription that answered 410 Gone: its pending deliveries are not sent (SPEC §7).
        "CREATE TABLE disabled_subscriptions (name text PRIMARY KEY, at text NOT NULL, reason text NOT NULL)",
    ],
    [  # 3: the message filter of `deliveries` finds the rows by time, not by an index of random keys
        "DROP INDEX deliveries_by_message",
        "CREATE INDEX deliveries_by_time ON deliveries (created_at)",
    ],
    [  # 4: genuine callbacks of kinds no parser reads yet, and the parts of messages that come in parts
        """CREATE TABLE unread (
            id text PRIMARY KEY,
            endpoint text NOT NULL,
            provider text NOT NULL,
            kind text NOT NULL,
            received_at text NOT NULL,
            body text NOT NULL
        )""",
        "CREATE INDEX unread_by_time ON unread (received_at)",
        """CREATE TABLE message_parts (
            endpoint text NOT NULL,
            grp text NOT NULL,
            number integer NOT NULL,
            part_id text NOT NULL,
            total integer NOT NULL,
            received_at text NOT NULL,
            body text NOT NULL,
            PRIMARY KEY (endpoint, grp, number)
        )""",
        # The parts of messages already stored: a late retry of one is known, not a new message.
        "CREATE TABLE joined_parts (endpoint text NOT NULL, part_id text NOT NULL, PRIMARY KEY (endpoint, part_id))",
    ],
    [  # 5: a failure's reason category (SPEC §9), for /v1/events?reason=; events stored before have none
        "ALTER TABLE events ADD COLUMN reason text",
        "CREATE INDEX events_by_reason ON events (reason, seq) WHERE reason IS NOT NULL",
    ],
    [  # 6: the facts /v1/stats reads, kept in the same write as each event (postgres_stats.py)
        *stats_schema.FACTS, _fill_countries, *stats_schema.ROLLUPS, "ANALYZE",
    ],
    [  # 7: refused callbacks, kept to be explained and replayed (SPEC §11)
        """CREATE TABLE refused (
            id text PRIMARY KEY,
            endpoint text NOT NULL,
            provider text NOT NULL,
            code text NOT NULL,
            detail text NOT NULL,
            method text NOT NULL,
            url text NOT NULL,
            query text NOT NULL,
            headers text NOT NULL,
            body bytea NOT NULL,
            received_at text NOT NULL,
            size integer NOT NULL
        )""",
        "CREATE INDEX refused_by_endpoint ON refused (endpoint, received_at)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

# One round trip per batch. `new` holds the rows this statement inserted (a duplicate id, stored
# earlier or by another replica, is not among them); of those, the best row per message moves the
# current status, only to a greater (rank, occurred_at, received_at): docs/events.md, The current status.
_GREATER = ("(excluded.rank, excluded.occurred_at, excluded.received_at)"
            " > (messages.rank, messages.occurred_at, messages.received_at)")
STORE_BATCH = f"""
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[], $11::text[])
        WITH ORDINALITY AS b (id, provider, message_id, status, rank, occurred_at, received_at, body, reason,
                              endpoint, country, position)
), new AS (
    INSERT INTO events (id, provider, message_id, status, rank, occurred_at, received_at, body, reason)
    SELECT id, provider, message_id, status, rank, occurred_at, received_at, body, reason FROM batch ORDER BY position
    ON CONFLICT (id) DO NOTHING
    RETURNING id, provider, message_id, status, rank, occurred_at, received_at, reason
), best AS (
    SELECT DISTINCT ON (provider, message_id) * FROM new
    ORDER BY provider, message_id, rank DESC, occurred_at DESC, received_at DESC
), facts AS (  -- the stats' facts of each message from the batch's new events (postgres_stats.py)
    SELECT n.provider, n.message_id, min(b.endpoint) AS endpoint, min(b.country) AS country,
        min(n.received_at) AS created_at, {first_times("n")}
    FROM new n JOIN batch b ON b.id = n.id GROUP BY n.provider, n.message_id
), moved AS (
    INSERT INTO messages (provider, message_id, rank, occurred_at, received_at, event_id, endpoint, country,
                          created_at, status, reason, start_occ, start_rcv, done_occ, done_rcv)
    SELECT b.provider, b.message_id, b.rank, b.occurred_at, b.received_at, b.id, f.endpoint, f.country,
           f.created_at, b.status, coalesce(b.reason, ''), f.start_occ, f.start_rcv, f.done_occ, f.done_rcv
    FROM best b JOIN facts f ON f.provider = b.provider AND f.message_id = b.message_id
    ORDER BY b.provider, b.message_id
    ON CONFLICT (provider, message_id) DO UPDATE SET
        {", ".join(f"{c} = CASE WHEN {_GREATER} THEN excluded.{c} ELSE messages.{c} END"
                   for c in ("rank", "occurred_at", "received_at", "event_id", "status", "reason"))},
        {", ".join(f"{c} = least(messages.{c}, excluded.{c})"
                   for c in ("start_occ", "start_rcv", "done_occ", "done_rcv"))}
)
SELECT id FROM new
"""

# What a lost or refused connection raises, in asyncpg and below it. A connection killed while a
# statement runs on it can also end in asyncpg's InternalClientError ("cannot switch to state 15;
# another operation is in progress"), which escaped here once and left its batch unanswered.
OUTAGE = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError,
          asyncio.TimeoutError)


class PostgresSink(SQLReads):
    mark = "$"

    def __init__(self, dsn: str, *, pool_size: int = 10, max_batch: int = 256, parts: Sequence[Part] = (),
                 observe: Observe | None = None, folding: bool = True) -> None:
        self._dsn = dsn
        self._folding = folding  # False: reads only (the CLI)
        self._folder: asyncio.Task[None] | None = None
        self._parts = tuple(parts)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # Up to pool_size batches in flight; what arrives meanwhile joins the next one.
        self._batches: Batcher[tuple[StatusEvent, list[Rows]]] = Batcher(
            self._store, what="the PostgreSQL store", max_batch=max_batch, concurrency=pool_size, deadline=DEADLINE,
            observe=observe)
        self._finishes: Batcher[tuple[Attempt, str | None]] = Batcher(
            self._finish_batch, what="the PostgreSQL outbox", max_batch=1024, deadline=DEADLINE)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, timeout=TIMEOUT, command_timeout=TIMEOUT)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute("CREATE TABLE IF NOT EXISTS status_gateway_schema (version integer NOT NULL)")
                version = await conn.fetchval("SELECT max(version) FROM status_gateway_schema") or 0
                if version > SCHEMA_VERSION:
                    raise SinkUnavailable(f"the PostgreSQL schema (version {version}) is newer than this gateway's")
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        if isinstance(statement, str):
                            await conn.execute(statement)
                        else:
                            await statement(conn)
                if version < SCHEMA_VERSION:
                    await conn.execute("INSERT INTO status_gateway_schema (version) VALUES ($1)", SCHEMA_VERSION)
            if self._folding:
                self._folder = asyncio.create_task(self._fold_forever())
        except OUTAGE as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise SinkUnavailable(f"cannot open the PostgreSQL store: {reason(exc)}") from exc

    def write(self, event: StatusEvent) -> asyncio.Future[bool]:
        return self._batches.submit((event, [rows for part in self._parts for rows in part.rows(event)]))

    async def _store(self, batch: list[tuple[StatusEvent, list[Rows]]]) -> list[bool]:
        """The batch in one statement; with the Parts' rows of its new events, all in one transaction."""
        assert self._pool is not None, "open() first"
        events = [event for event, _ in batch]
        firsts = first_occurrences(e.id for e in events)
        rows = [e for e, first in zip(events, firsts, strict=True) if first]
        columns = (
            [e.id for e in rows], [e.provider for e in rows], [e.message_id for e in rows],
            [e.status.value for e in rows], [e.status.rank for e in rows], [e.occurred_at or "" for e in rows],
            [e.received_at for e in rows], [e.dumps().decode() for e in rows],
            [e.reason.category if e.reason else None for e in rows], [e.endpoint for e in rows],
            [country_of(e.to) for e in rows],
        )
        extras = [rows for _, rows in batch]
        try:
            async with self._pool.acquire(timeout=TIMEOUT) as conn:
                # The events' statement is its own transaction, unless a Part's rows go with it.
                async with conn.transaction() if any(extras) else contextlib.nullcontext():
                    inserted = {record[0] for record in await conn.fetch(STORE_BATCH, *columns)}
                    results = [first and e.id in inserted for e, first in zip(events, firsts, strict=True)]
                    if any(extras):
                        await _insert_extras(conn, list(zip(events, results, extras, strict=True)))
        except OUTAGE as exc:
            raise SinkUnavailable(f"the PostgreSQL store cannot take events: {reason(exc)}") from exc
        return results

    async def ready(self) -> bool:
        """Writable now: a real (tiny) commit, so a lost server or a read-only one shows here."""
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(DEADLINE), self._pool.acquire(timeout=TIMEOUT) as conn:
                await conn.execute(
                    "INSERT INTO heartbeat (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    utc_iso(datetime.now().astimezone()), timeout=TIMEOUT)
        except OUTAGE:
            return False
        return True

    # --- the outbox (Outbox protocol): the dispatcher's leases and records ----------------------

    async def claim(self, *, now: str, lease_until: str, limit: int, by: str) -> list[Claimed]:
        async def work(conn: Connection) -> list[Claimed]:
            if await conn.fetchval(OUTBOX.any_disabled):
                await conn.execute(OUTBOX.disable_pending)
            return [Claimed(r[0], r[1], r[2], r[3].encode(), r[4].encode(), r[5], r[6], r[7])
                    for r in await conn.fetch(OUTBOX.claim, lease_until, now, limit, by)]

        return await self._outbox(work)

    async def finish(self, attempt: Attempt, *, disable: str | None = None) -> None:
        await self._finishes.submit((attempt, disable))

    async def _finish_batch(self, batch: list[tuple[Attempt, str | None]]) -> list[bool]:
        async def work(conn: Connection) -> list[bool]:
            params = [finish_params(attempt) for attempt, _ in batch]
            await conn.executemany(OUTBOX.finish, [update for update, _ in params])
            await conn.executemany(OUTBOX.record, [record for _, record in params])
            for attempt, disable in batch:
                if disable:
                    await conn.execute(OUTBOX.disable, disable, attempt.at, f"HTTP {attempt.http_status}")
            return [True] * len(batch)

        return await self._outbox(work)

    async def release(self, delivery_ids: Sequence[str]) -> None:
        async def work(conn: Connection) -> None:
            await conn.executemany(OUTBOX.release, [(i,) for i in delivery_ids])

        await self._outbox(work)

    async def backlog(self) -> tuple[int, str | None]:
        async def work(conn: Connection) -> tuple[int, str | None]:
            record = await conn.fetchrow(OUTBOX.backlog)
            assert record is not None  # an aggregate has a row
            return int(record[0]), record[1]

        return await self._outbox(work)

    async def deliveries(self, *, subscription: str | None = None, state: str | None = None,
                         message_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, params = OUTBOX.listing(subscription, state, message_id, limit)

        async def work(conn: Connection) -> list[dict[str, Any]]:
            return [delivery_json(tuple(record)) for record in await conn.fetch(sql, *params)]

        return await self._outbox(work)

    async def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        async def work(conn: Connection) -> dict[str, Any] | None:
            found = await conn.fetchrow(OUTBOX.one, delivery_id)
            if found is None:
                return None
            return delivery_json(tuple(found), [tuple(r) for r in await conn.fetch(OUTBOX.history, delivery_id)])

        return await self._outbox(work)

    async def redeliver(self, *, ids: Sequence[str] = (), subscription: str | None = None,
                        since: str | None = None, now: str) -> list[str]:
        sql, params = OUTBOX.requeuing(ids, subscription, since, now)

        async def work(conn: Connection) -> list[str]:
            if subscription is not None and not ids:
                await conn.execute(OUTBOX.enable, subscription)
            return [record[0] for record in await conn.fetch(sql, *params)]

        return await self._outbox(work)

    async def _outbox(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        assert self._pool is not None, "open() first"
        try:
            async with asyncio.timeout(DEADLINE), self._pool.acquire(timeout=TIMEOUT) as conn, conn.transaction():
                return await work(conn)
        except OUTAGE as exc:
            raise SinkUnavailable(f"the PostgreSQL store cannot be written: {reason(exc)}") from exc

    # --- kept callbacks (Store protocol): unread kinds, parts of a message -----------------------

    async def keep_unread(self, endpoint: str, provider: str, unread: Unread, received_at: str) -> bool:
        async def work(conn: Connection) -> bool:
            status = await conn.execute(KEPT.keep_unread, *unread_params(endpoint, provider, unread, received_at))
            return bool(status == "INSERT 0 1")

        return await self._outbox(work)

    async def keep_part(self, endpoint: str, provider: str, part: Fragment) -> list[Fragment] | None:
        async def work(conn: Connection) -> list[Fragment] | None:
            # Replicas keeping parts of one group at once take turns, so the last one sees them all.
            await self._lock_group(conn, endpoint, part.group)
            place = await conn.fetchrow(KEPT.place, endpoint, part.id, part.group, part.number)
            known, holder = tuple(place) if place is not None else (0, None)
            if known:
                return []
            if holder is not None and holder != part.id:
                old = parts_of(part, [tuple(r) for r in await conn.fetch(KEPT.parts, endpoint, part.group)])
                unread = abandoned(old)
                await conn.execute(KEPT.keep_unread, *unread_params(endpoint, provider, unread, part.received_at))
                await conn.executemany(KEPT.remember, [(endpoint, p.id) for p in old])
                await conn.execute(KEPT.drop_group, endpoint, part.group)
            await conn.execute(KEPT.keep_part, *part_params(endpoint, part))
            return complete(part, [tuple(record) for record in await conn.fetch(KEPT.parts, endpoint, part.group)])

        return await self._outbox(work)

    async def forget_parts(self, endpoint: str, parts: Sequence[Fragment]) -> None:
        async def work(conn: Connection) -> None:
            await self._lock_group(conn, endpoint, parts[0].group)
            await conn.executemany(KEPT.remember, [(endpoint, part.id) for part in parts])
            await conn.executemany(KEPT.forget, [(endpoint, part.group, part.number, part.id) for part in parts])

        await self._outbox(work)

    @staticmethod
    async def _lock_group(conn: Connection, endpoint: str, group: str) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{endpoint}\x1f{group}")

    async def unread(self, *, endpoint: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, params = KEPT.listing(endpoint, limit)

        async def work(conn: Connection) -> list[dict[str, Any]]:
            return [unread_json(tuple(record)) for record in await conn.fetch(sql, *params)]

        return await self._outbox(work)

    # --- the quarantine (Store protocol): refused callbacks ------------------------------------

    async def quarantine(self, refused: Sequence[Refused], *, max_count: int, max_bytes: int) -> None:
        async def work(conn: Connection) -> None:
            await conn.executemany(REFUSED.keep, [refused_params(r) for r in refused])
            for endpoint in sorted({r.endpoint for r in refused}):
                await conn.execute(REFUSED.trim, endpoint, max_count, max_bytes)

        await self._outbox(work)

    async def refused(self, *, endpoint: str | None = None, ids: Sequence[str] = (), since: str | None = None,
                      until: str | None = None, limit: int = 100) -> list[Refused]:
        sql, params = REFUSED.listing(endpoint=endpoint, ids=ids, since=since, until=until, limit=limit)
        return [refused_of(row) for row in await self._rows(sql, tuple(params))]

    async def refused_counts(self) -> list[dict[str, Any]]:
        return refused_counts(await self._rows(REFUSED.counts, ()))

    async def forget_refused(self, ids: Sequence[str]) -> None:
        if ids:
            async def work(conn: Connection) -> None:
                await conn.execute(REFUSED.forget(len(ids)), *ids)

            await self._outbox(work)

    def rollup(self, kind: str, grain: str) -> str:
        return stats_schema.rollup(kind, grain)  # with the deltas not folded yet: exact at once

    async def _fold_forever(self) -> None:
        """Every second, the stats' deltas into their rollups, by whichever replica gets the lock."""
        while True:
            await asyncio.sleep(FOLD_EVERY)
            await self.fold()

    async def fold(self) -> bool:
        """One fold (postgres_stats.py); False if another replica is folding, or the server is away."""
        assert self._pool is not None, "open() first"
        try:
            async with asyncio.timeout(DEADLINE), self._pool.acquire(timeout=TIMEOUT) as conn, conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", stats_schema.FOLD_LOCK):
                    return False
                for statement in stats_schema.FOLD:
                    await conn.execute(statement)
                return True
        except OUTAGE:
            return False  # the deltas wait for the next fold; figures read them meanwhile

    async def close(self) -> None:
        """Commits what is waiting (each batch once more, if the server is there), then disconnects."""
        if self._folder is not None:
            self._folder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._folder
            self._folder = None
        await self._batches.drain()
        await self._finishes.drain()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), TIMEOUT)
            except (TimeoutError, *OUTAGE):
                pool.terminate()

    # --- reads: SQLReads runs its queries through this ------------------------------------------

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._pool is not None, "open() first"
        try:
            async with asyncio.timeout(DEADLINE), self._pool.acquire(timeout=TIMEOUT) as conn:
                return [tuple(record) for record in await conn.fetch(sql, *params)]
        except OUTAGE as exc:
            raise SinkUnavailable(f"cannot read the PostgreSQL store: {reason(exc)}") from exc

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[int, StatusEvent]]:
        assert self._pool is not None, "open() first"
        try:
            async with asyncio.timeout(DEADLINE), self._pool.acquire(timeout=TIMEOUT) as conn:
                records = await conn.fetch(sql, *params)
        except OUTAGE as exc:
            raise SinkUnavailable(f"cannot read the PostgreSQL store: {reason(exc)}") from exc
        return [(record[0], StatusEvent.loads(record[1])) for record in records]


async def _insert_extras(conn: Connection,
                         batch: list[tuple[StatusEvent, bool, list[Rows]]]) -> None:
    """The Parts' rows of each event stored now (a duplicate adds none), in the caller's transaction,
    with the current status of each message as the batch left it."""
    wanted = sorted({(e.provider, e.message_id) for e, new, extras in batch
                     if new and any(rows.current for rows in extras)})
    currents = {(record[0], record[1]): current_json(record[2], record[3]) for record in await conn.fetch(
        "SELECT m.provider, m.message_id, e.status, e.received_at FROM messages m JOIN events e ON e.id = m.event_id"
        " JOIN unnest($1::text[], $2::text[]) AS w (provider, message_id)"
        " ON w.provider = m.provider AND w.message_id = m.message_id",
        [p for p, _ in wanted], [m for _, m in wanted])} if wanted else {}
    added = [((event.provider, event.message_id), extras) for event, new, extras in batch if new]
    for (table, columns, _), values in rows_by_table(added, lambda key: (currents.get(key, ""),)).items():
        marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)
