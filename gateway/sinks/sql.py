"""What the SQL stores share: their reads (the Store side), over the same tables."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import orjson

from gateway.model import Fragment, Refused, Status, StatusEvent, Unread, utc_iso
from gateway.sinks.base import Attempt
from gateway.stats import GROUPINGS, Window, figures
from providers import EVENT_PROVIDERS, with_reason


def first_occurrences(ids: Iterable[str]) -> list[bool]:
    """For a batch of event ids: True for each first occurrence. The same callback twice in one
    batch (a retry racing its original) is a duplicate of the earlier one, whatever the store says."""
    seen: set[str] = set()
    firsts = []
    for event_id in ids:
        firsts.append(event_id not in seen)
        seen.add(event_id)
    return firsts


class SQLReads:
    """current, timeline and recent for a store with the `events` and `messages` tables.

    The store says how it runs a query (`_read`) and how it marks parameter n (`mark` + n:
    SQLite's ?1, PostgreSQL's $1).
    """

    mark: ClassVar[str]

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[int, StatusEvent]]:
        raise NotImplementedError

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def stats(self, *, window: Window, by: str = "provider", provider: str | None = None,
                    endpoint: str | None = None) -> list[dict[str, Any]]:
        """/v1/stats' groups, from the rollups the event writes keep (gateway/stats.py)."""
        if by not in GROUPINGS:
            raise ValueError(f"by must be one of {', '.join(GROUPINGS)}")
        group = "substr(period, 1, 10)" if by == "day" else by
        filters, params = "", []
        for column, value in (("provider", provider), ("endpoint", endpoint)):
            if value is not None:
                params.append(value)
                filters += f" AND {column} = {self.mark}{len(params)}"
        counts, times, pieces = [], [], []
        for grain, first, last in window.pieces():
            params += [first, last]
            pieces.append((grain, f"period >= {self.mark}{len(params) - 1} AND period <= {self.mark}{len(params)}"))
        for grain, where in pieces:
            counts.append(f"SELECT {group} AS g, status, reason, n FROM {self.rollup('counts', grain)}"
                          f" WHERE {where}{filters}")
            times.append(f"SELECT {group} AS g, seconds, n FROM {self.rollup('times', grain)} WHERE {where}{filters}")
        if not pieces:
            return []
        count_rows = await self._rows(f"SELECT g, status, reason, sum(n) FROM ({' UNION ALL '.join(counts)})"
                                      " AS c GROUP BY g, status, reason", tuple(params))
        time_rows = await self._rows(f"SELECT g, seconds, sum(n) FROM ({' UNION ALL '.join(times)})"
                                     " AS t GROUP BY g, seconds", tuple(params))
        return figures(((g, st, r, int(n)) for g, st, r, n in count_rows),
                       ((g, int(sec), int(n)) for g, sec, n in time_rows))

    def rollup(self, kind: str, grain: str) -> str:
        """Where a rollup is read: its table (PostgreSQL adds the deltas not folded into it yet)."""
        return f"stats_{kind}{'_daily' if grain == 'day' else ''}"

    async def _events(self, sql: str, params: tuple[Any, ...]) -> list[tuple[int, StatusEvent]]:
        """_read, with the reason filled in for failures stored before reasons existed."""
        return [(seq, with_reason(event)) for seq, event in await self._read(sql, params)]

    async def current(self, provider: str, message_id: str) -> StatusEvent | None:
        m = self.mark
        rows = await self._events(
            "SELECT e.seq, e.body FROM messages m JOIN events e"
            " ON e.provider = m.provider AND e.message_id = m.message_id AND e.id = m.event_id"
            f" WHERE m.provider = {m}1 AND m.message_id = {m}2", (provider, message_id))
        return rows[0][1] if rows else None

    async def timeline(self, provider: str, message_id: str) -> list[StatusEvent]:
        m = self.mark
        rows = await self._events(
            # `seq + 0`: sorting a message's few events, so no index ordered by seq (events_by_provider)
            # looks cheaper to the planner than finding them by their message.
            f"SELECT seq, body FROM events WHERE provider = {m}1 AND message_id = {m}2 ORDER BY seq + 0",
            (provider, message_id))
        return [event for _, event in rows]

    async def recent(
        self, *, provider: str | None = None, status: Status | None = None,
        since: datetime | None = None, limit: int = 100, after_seq: int | None = None,
        direction: str | None = None, reason: str | None = None,
    ) -> list[tuple[int, StatusEvent]]:
        clauses, params = filters(provider, status, since, after_seq, self.mark + "#", reason)
        if direction is not None:  # an incoming message is the only event with status received
            clauses.append(f"status {'=' if direction == 'inbound' else '!='} '{Status.RECEIVED.value}'")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return await self._events(
            f"SELECT seq, body FROM events{where} ORDER BY seq DESC LIMIT {self.mark}{len(params) + 1}",
            (*params, limit))


    async def export(self, *, after_seq: int = 0, since: str | None = None, until: str | None = None,
                     limit: int = 1000) -> list[tuple[int, StatusEvent]]:
        """The next page of events in the order they were stored, for `export`: seq after
        `after_seq`, received in [since, until)."""
        m = self.mark
        clauses: list[str] = [f"seq > {m}1"]
        params: list[Any] = [after_seq]
        for column, value, op in (("received_at", since, ">="), ("received_at", until, "<")):
            if value:
                params.append(value)
                clauses.append(f"{column} {op} {m}{len(params)}")
        params.append(limit)
        return await self._events(f"SELECT seq, body FROM events WHERE {' AND '.join(clauses)} ORDER BY seq"
                                  f" LIMIT {m}{len(params)}", tuple(params))


def first_times(alias: str = "") -> str:
    """A message's first sent-or-earlier and first delivered times over its events, the provider's
    and ours, as the aggregate columns start_occ, start_rcv, done_occ, done_rcv: the stats' rule
    (docs/architecture.md, Stats), for PostgreSQL's batch statement and both stores' upgrades."""
    a = f"{alias}." if alias else ""
    start, done = f"{a}rank BETWEEN 1 AND 3 AND {a}status <> 'received'", f"{a}status = 'delivered'"
    return (f"min(CASE WHEN {start} THEN nullif({a}occurred_at, '') END) AS start_occ,"
            f" min(CASE WHEN {start} THEN {a}received_at END) AS start_rcv,"
            f" min(CASE WHEN {done} THEN nullif({a}occurred_at, '') END) AS done_occ,"
            f" min(CASE WHEN {done} THEN {a}received_at END) AS done_rcv")


def filters(
    provider: str | None, status: Status | None, since: datetime | None, after_seq: int | None, mark: str,
    reason: str | None = None,
) -> tuple[list[str], list[Any]]:
    """WHERE clauses of `recent`; `mark` makes the placeholders ("#" becomes the parameter's number)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("provider", "=", provider),
        ("status", "=", status.value if status else None),
        ("received_at", ">=", utc_iso(since) if since else None),
        ("seq", ">", after_seq),
        ("reason", "=", reason),  # the category; failures stored before reasons existed have none
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{column} {op} {mark.replace('#', str(len(params)))}")
    return clauses, params


class OutboxSQL:
    """The forwarding outbox's statements for a store with the `deliveries`, `attempts` and
    `disabled_subscriptions` tables; `mark` as in SQLReads, `lock` what the claim's select adds
    (PostgreSQL: FOR UPDATE SKIP LOCKED, so two replicas never lease one delivery)."""

    def __init__(self, mark: str, lock: str = "") -> None:
        m = mark
        # A subscription that answered 410 sends nothing more: its pending rows become disabled.
        # Run only when one is disabled (`any_disabled`): it looks at every pending row.
        self.any_disabled = "SELECT EXISTS (SELECT 1 FROM disabled_subscriptions)"
        self.disable_pending = ("UPDATE deliveries SET state = 'disabled', lease_until = NULL WHERE state = 'pending'"
                                " AND subscription IN (SELECT name FROM disabled_subscriptions)")
        self.claim = (
            f"UPDATE deliveries SET lease_until = {m}1, claimed_by = {m}4 WHERE id IN (SELECT id FROM deliveries"
            f" WHERE state = 'pending' AND next_at <= {m}2 AND (lease_until IS NULL OR lease_until < {m}2)"
            f" ORDER BY next_at LIMIT {m}3{lock})"
            " RETURNING id, subscription, event_id, body, current, attempts, created_at, schedule_from")
        self.finish = (f"UPDATE deliveries SET state = {m}1, attempts = {m}2, next_at = {m}3, lease_until = NULL"
                       f" WHERE id = {m}4")
        self.record = ("INSERT INTO attempts (delivery_id, attempt, at, http_status, error, duration_ms)"
                       f" VALUES ({m}1, {m}2, {m}3, {m}4, {m}5, {m}6) ON CONFLICT DO NOTHING")
        self.disable = (f"INSERT INTO disabled_subscriptions (name, at, reason) VALUES ({m}1, {m}2, {m}3)"
                        " ON CONFLICT (name) DO NOTHING")
        self.release = f"UPDATE deliveries SET lease_until = NULL WHERE id = {m}1"
        self.backlog = "SELECT count(*), min(created_at) FROM deliveries WHERE state = 'pending'"
        self.one = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = {m}1"
        self.history = ("SELECT attempt, at, http_status, error, duration_ms FROM attempts"
                        f" WHERE delivery_id = {m}1 ORDER BY attempt")
        self.requeue = ("UPDATE deliveries SET state = 'pending', next_at = {m}1, lease_until = NULL,"
                        " schedule_from = attempts WHERE {where} RETURNING id").replace("{m}", m)
        self.enable = f"DELETE FROM disabled_subscriptions WHERE name = {m}1"
        self.mark = m

    def listing(self, subscription: str | None, state: str | None, message_id: str | None,
                limit: int) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("subscription", subscription), ("state", state), ("message_id", message_id)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = {self.mark}{len(params)}")
        if message_id is not None:
            # A delivery is created at its event's received_at: look only between the message's first
            # and last event (deliveries_by_time), found through the events' own index.
            m, n = self.mark, len(params)
            events = f"FROM events WHERE provider IN ({', '.join(PROVIDER_NAMES)}) AND message_id = {m}{n}"
            clauses.append(f"created_at >= (SELECT min(received_at) {events})"
                           f" AND created_at <= (SELECT max(received_at) {events})")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        return (f"SELECT {DELIVERY_COLUMNS} FROM deliveries{where} ORDER BY created_at DESC, id"
                f" LIMIT {self.mark}{len(params)}", params)

    def requeuing(self, ids: Sequence[str], subscription: str | None, since: str | None,
                  now: str) -> tuple[str, list[Any]]:
        """The requeue statement for these ids, or for a subscription's deliveries since a time."""
        params: list[Any] = [now]
        if ids:
            marks = ", ".join(f"{self.mark}{n}" for n in range(2, len(ids) + 2))
            params += list(ids)
            return self.requeue.replace("{where}", f"id IN ({marks})"), params
        params += [subscription, since or ""]
        return self.requeue.replace("{where}", f"subscription = {self.mark}2 AND created_at >= {self.mark}3"), params


class KeptSQL:
    """Statements of the callbacks a store keeps outside the events: the unread ones (kinds no
    parser reads yet), and the parts of a message that comes in parts until the last one is here."""

    def __init__(self, mark: str) -> None:
        m = mark
        self.keep_unread = ("INSERT INTO unread (id, endpoint, provider, kind, received_at, body)"
                            f" VALUES ({m}1, {m}2, {m}3, {m}4, {m}5, {m}6) ON CONFLICT (id) DO NOTHING")
        # Where a part stands: its message stored already (1), and which part holds its place.
        self.place = (f"SELECT (SELECT count(*) FROM joined_parts WHERE endpoint = {m}1 AND part_id = {m}2),"
                      f" (SELECT part_id FROM message_parts WHERE endpoint = {m}1 AND grp = {m}3 AND number = {m}4)")
        self.keep_part = ("INSERT INTO message_parts (endpoint, grp, number, part_id, total, received_at, body)"
                          f" VALUES ({m}1, {m}2, {m}3, {m}4, {m}5, {m}6, {m}7) ON CONFLICT DO NOTHING")
        self.parts = (f"SELECT number, total, received_at, body, part_id FROM message_parts WHERE endpoint = {m}1"
                      f" AND grp = {m}2 ORDER BY number")
        self.drop_group = f"DELETE FROM message_parts WHERE endpoint = {m}1 AND grp = {m}2"
        # Only these parts: a new message may already have taken the group (keep_part moved these aside).
        self.forget = (f"DELETE FROM message_parts WHERE endpoint = {m}1 AND grp = {m}2 AND number = {m}3"
                       f" AND part_id = {m}4")
        self.remember = f"INSERT INTO joined_parts (endpoint, part_id) VALUES ({m}1, {m}2) ON CONFLICT DO NOTHING"
        self.mark = m

    def listing(self, endpoint: str | None, limit: int) -> tuple[str, list[Any]]:
        where, params = (f" WHERE endpoint = {self.mark}1", [endpoint]) if endpoint else ("", [])
        return (f"SELECT id, endpoint, provider, kind, received_at, body FROM unread{where}"
                f" ORDER BY received_at DESC, id LIMIT {self.mark}{len(params) + 1}", [*params, limit])


REFUSED_COLUMNS = "id, endpoint, provider, code, detail, method, url, query, headers, body, received_at"


class RefusedSQL:
    """Statements of the quarantine (SPEC §11): refused callbacks, the newest of each endpoint
    within its bounds of count and bytes."""

    def __init__(self, mark: str) -> None:
        m = mark
        self.mark = m
        self.keep = (f"INSERT INTO refused ({REFUSED_COLUMNS}, size) VALUES"
                     f" ({', '.join(f'{m}{n}' for n in range(1, 13))}) ON CONFLICT (id) DO NOTHING")
        # The newest first; whatever lies past the count or the bytes goes, oldest first.
        self.trim = ("DELETE FROM refused WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER w AS n,"
                     f" sum(size) OVER w AS total FROM refused WHERE endpoint = {m}1"
                     " WINDOW w AS (ORDER BY received_at DESC, id DESC)) AS ranked"
                     f" WHERE n > {m}2 OR total > {m}3)")
        self.counts = ("SELECT endpoint, code, count(*), max(received_at) FROM refused"
                       " GROUP BY endpoint, code ORDER BY endpoint, code")

    def listing(self, *, endpoint: str | None, ids: Sequence[str], since: str | None, until: str | None,
                limit: int) -> tuple[str, list[Any]]:
        conditions: list[str] = []
        params: list[Any] = []

        def mark(value: Any) -> str:
            params.append(value)
            return f"{self.mark}{len(params)}"

        if ids:
            conditions.append(f"id IN ({', '.join(mark(i) for i in ids)})")
        if endpoint:
            conditions.append(f"endpoint = {mark(endpoint)}")
        if since:
            conditions.append(f"received_at >= {mark(since)}")
        if until:
            conditions.append(f"received_at < {mark(until)}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return (f"SELECT {REFUSED_COLUMNS} FROM refused{where} ORDER BY received_at DESC, id"
                f" LIMIT {mark(limit)}"), params

    def forget(self, count: int) -> str:
        return f"DELETE FROM refused WHERE id IN ({', '.join(f'{self.mark}{n}' for n in range(1, count + 1))})"


def refused_params(refused: Refused) -> tuple[Any, ...]:
    return (refused.id, refused.endpoint, refused.provider, refused.code, refused.detail, refused.method,
            refused.url, refused.query, orjson.dumps(refused.headers).decode(), refused.body, refused.received_at,
            refused.size)


def refused_of(row: Sequence[Any]) -> Refused:
    key, endpoint, provider, code, detail, method, url, query, headers, body, received_at = row
    return Refused(id=key, endpoint=endpoint, provider=provider, code=code, detail=detail, method=method, url=url,
                   query=query, headers=orjson.loads(headers), body=bytes(body), received_at=received_at)


def refused_counts(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [{"endpoint": row[0], "code": row[1], "count": int(row[2]), "last": row[3]} for row in rows]


def unread_params(endpoint: str, provider: str, unread: Unread, received_at: str) -> tuple[str, ...]:
    """KeptSQL.keep_unread's parameters. The id is the endpoint and the body: the same callback
    on the same endpoint (a provider's retry) is kept once."""
    body = orjson.dumps(unread.fields, option=orjson.OPT_SORT_KEYS).decode()
    key = hashlib.sha256(endpoint.encode() + b"\x1f" + body.encode()).hexdigest()[:32]
    return (key, endpoint, provider, unread.kind, received_at, body)


def unread_json(row: Sequence[Any]) -> dict[str, Any]:
    key, endpoint, provider, kind, received_at, body = row
    return {"id": key, "endpoint": endpoint, "provider": provider, "kind": kind, "received_at": received_at,
            "fields": orjson.loads(body)}


def part_params(endpoint: str, part: Fragment) -> tuple[Any, ...]:
    fields = orjson.dumps(part.fields).decode()
    return (endpoint, part.group, part.number, part.id, part.total, part.received_at, fields)


def parts_of(part: Fragment, rows: Sequence[Sequence[Any]]) -> list[Fragment]:
    """The group's parts as stored: (number, total, received_at, body, part_id) rows."""
    return [Fragment(group=part.group, id=row[4], number=row[0], total=row[1], fields=orjson.loads(row[3]),
                     received_at=row[2]) for row in rows]


def complete(part: Fragment, rows: Sequence[Sequence[Any]]) -> list[Fragment] | None:
    """All the parts of `part`'s group, once each of 1..total is there; else None."""
    if [row[0] for row in rows] != list(range(1, part.total + 1)):
        return None
    return parts_of(part, rows)


def abandoned(parts: Sequence[Fragment]) -> Unread:
    """The parts of a message that never completed, whose group a new message now takes: kept
    whole (and their ids remembered, so a late retry of one does not slip into the new message)."""
    return Unread("parts of a message that did not complete before its group was reused",
                  {"group": parts[0].group, "parts": [p.fields for p in parts]})


# The events' provider names as SQL literals: with them the events' (provider, message_id, …) index
# finds a message by its id alone. Names from code (the registry), never from a request.
PROVIDER_NAMES = tuple("'" + name.replace("'", "''") + "'" for name in EVENT_PROVIDERS)
DELIVERY_COLUMNS = "id, subscription, event_id, provider, message_id, state, attempts, next_at, created_at, claimed_by"
DELIVERY_KEYS = DELIVERY_COLUMNS.split(", ")
HISTORY_KEYS = ("attempt", "at", "http_status", "error", "duration_ms")


def delivery_json(row: Sequence[Any], history: Sequence[Sequence[Any]] | None = None) -> dict[str, Any]:
    data = dict(zip(DELIVERY_KEYS, row, strict=True))
    if history is not None:
        data["history"] = [dict(zip(HISTORY_KEYS, attempt, strict=True)) for attempt in history]
    return data


def finish_params(attempt: Attempt) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(the delivery's update, the attempt's record), in the order of OutboxSQL's placeholders."""
    return ((attempt.state, attempt.number, attempt.next_at, attempt.delivery_id),
            (attempt.delivery_id, attempt.number, attempt.at, attempt.http_status, attempt.error,
             attempt.duration_ms))
