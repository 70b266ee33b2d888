"""/v1: read the unified state (a message's status and timeline, recent events) behind a bearer token.

The token is checked once, by BearerAuth around the whole mount; the handlers never see a request
that did not pass it (the dashboard will sit behind the same check).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route

from gateway.clock import Clock
from gateway.errors import Malformed, NotFound, Unauthorized
from gateway.model import CATEGORIES, Status, parse_iso, utc_iso
from gateway.sinks import Store
from gateway.sinks.base import DELIVERY_STATES, Outbox
from gateway.stats import GROUPINGS, Window, moment
from gateway.ui import COOKIE, valid_session
from gateway.webhook import Receive, Scope, Send

MAX_LIMIT = 1000
STREAM_POLL = 0.25  # seconds between looks at the store for a stream's next events
STREAM_BATCH = 500
STREAM_KEEPALIVE = 15.0


def api_mount(store: Store, token: str, *, outbox: Outbox, clock: Clock,
              stopping: asyncio.Event | None = None) -> Mount:
    """`stopping`: set when the server begins to shut down; open streams end then, so they do not
    hold the shutdown up (their clients reconnect, to another replica or to this one restarted)."""
    return Mount("/v1", routes=[
        Route("/messages/{provider}/{message_id:path}", partial(get_message, store=store)),
        Route("/events", partial(list_events, store=store)),
        Route("/stream", partial(stream, store=store, stopping=stopping or asyncio.Event())),
        Route("/stats", partial(get_stats, store=store, clock=clock)),
        Route("/unread", partial(list_unread, store=store)),
        Route("/refused", partial(list_refused, store=store)),
        Route("/deliveries", partial(list_deliveries, outbox=outbox)),
        Route("/deliveries/{delivery_id}", partial(get_delivery, outbox=outbox)),
        Route("/deliveries/{delivery_id}/redeliver", partial(redeliver, outbox=outbox, clock=clock),
              methods=["POST"]),
    ], middleware=[Middleware(BearerAuth, token=token, clock=clock)])


class BearerAuth:
    """ASGI middleware: every request behind it carries `Authorization: Bearer <token>`, or gets 401.

    A GET may instead carry the dashboard's session cookie (gateway/ui): the page's script reads
    with it and never holds the token. Only reads: SameSite=Strict already keeps other sites'
    requests from carrying it, and a change (redeliver) still needs the token itself.
    """

    def __init__(self, app: Any, *, token: str, clock: Clock) -> None:
        self.app = app
        self.token = token
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._session(scope):
            header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token.encode()):
                raise Unauthorized("send Authorization: Bearer <server.api_token>")
        await self.app(scope, receive, send)

    def _session(self, scope: Scope) -> bool:
        if scope["method"] not in ("GET", "HEAD"):
            return False
        header = next((value for name, value in scope["headers"] if name == b"cookie"), None)
        if header is None:
            return False
        value = cookie_parser(header.decode("latin-1")).get(COOKIE)
        return valid_session(self.token, value, self._clock().timestamp())


async def get_message(request: Request, *, store: Store) -> JSONResponse:
    provider, message_id = request.path_params["provider"], request.path_params["message_id"]
    current = await store.current(provider, message_id)
    if current is None:
        raise NotFound(f"no events for {provider} message {message_id}")
    events = await store.timeline(provider, message_id)
    return JSONResponse({
        "provider": provider,
        "message_id": message_id,
        "status": current.status.value,
        "provider_status": current.provider_status,
        "final": current.final,
        "updated_at": current.received_at,
        "events": [event.to_json() for event in events],
    })


async def list_events(request: Request, *, store: Store) -> JSONResponse:
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in Status.__members__.values():
        raise Malformed(f"status must be one of {', '.join(s.value for s in Status)}")
    direction = query.get("direction") or None
    if direction not in (None, "inbound", "outbound"):
        raise Malformed("direction must be inbound or outbound")
    reason = query.get("reason") or None
    if reason is not None and reason not in CATEGORIES:
        raise Malformed(f"reason must be one of {', '.join(CATEGORIES)}")
    limit = parse_limit(query.get("limit"))
    events = await store.recent(
        provider=query.get("provider") or None,
        status=Status(status) if status else None,
        since=parse_since(query.get("since")),
        limit=limit,
        direction=direction,
        reason=reason,
    )
    return JSONResponse({"events": [event.to_json() for _, event in events]})


async def stream(request: Request, *, store: Store, stopping: asyncio.Event) -> StreamingResponse:
    """Server-Sent Events of new events: `id:` is the store's sequence, `data:` the event's JSON.

    It reads the store, not this process, so every replica streams every replica's events; a
    client that reconnects with Last-Event-ID gets what it missed, in order.
    """
    given = request.headers.get("last-event-id") or request.query_params.get("after")
    if given is not None and not given.isdigit():
        raise Malformed("Last-Event-ID must be an event sequence number from this stream")
    after = int(given) if given is not None else None
    if after is None:  # from now on
        newest = await store.recent(limit=1)
        after = newest[0][0] if newest else 0
    return StreamingResponse(_events_after(store, after, stopping), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def _events_after(store: Store, after: int, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    yield b": stream of status-gateway events\n\n"
    quiet = 0.0
    while not stopping.is_set():
        rows = await store.recent(after_seq=after, limit=STREAM_BATCH)
        for seq, event in reversed(rows):  # oldest first
            yield b"id: %d\ndata: %s\n\n" % (seq, event.dumps())
            after = seq
        if len(rows) == STREAM_BATCH:
            continue  # more are waiting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STREAM_POLL)
        quiet = 0.0 if rows else quiet + STREAM_POLL
        if quiet >= STREAM_KEEPALIVE:  # a comment line, so proxies keep an idle stream open
            quiet = 0.0
            yield b": keep-alive\n\n"


async def get_stats(request: Request, *, store: Store, clock: Clock) -> JSONResponse:
    """SPEC §10: per group, messages first seen in the window, their current statuses, delivery
    rate, top reasons and time to deliver (gateway/stats.py)."""
    query = request.query_params
    by = query.get("by") or "provider"
    if by not in GROUPINGS:
        raise Malformed(f"by must be one of {', '.join(GROUPINGS)}")
    now = clock()
    try:
        window = Window(moment(query.get("since"), now), moment(query.get("until"), now))
    except ValueError:
        raise Malformed("since and until are ISO 8601 times (2026-01-01T00:00:00Z) or spans (24h, 7d)") from None
    groups = await store.stats(window=window, by=by, provider=query.get("provider") or None,
                               endpoint=query.get("endpoint") or None)
    return JSONResponse({"since": utc_iso(window.since) if window.since else None,
                         "until": utc_iso(window.until) if window.until else None, "by": by, "groups": groups})


async def list_unread(request: Request, *, store: Store) -> JSONResponse:
    """Genuine callbacks of kinds no parser reads yet, kept whole: what a new webhook kind looks like."""
    query = request.query_params
    return JSONResponse({"unread": await store.unread(endpoint=query.get("endpoint") or None,
                                                      limit=parse_limit(query.get("limit")))})


async def list_refused(request: Request, *, store: Store) -> JSONResponse:
    """The quarantine (SPEC §11): how many each endpoint keeps by refusal, and the newest ones
    (without their bodies: `status-gateway explain` reads those)."""
    query = request.query_params
    since = parse_since(query.get("since"))
    refused = await store.refused(endpoint=query.get("endpoint") or None, since=utc_iso(since) if since else None,
                                  limit=parse_limit(query.get("limit")))
    return JSONResponse({"counts": await store.refused_counts(), "refused": [r.to_json() for r in refused]})


async def list_deliveries(request: Request, *, outbox: Outbox) -> JSONResponse:
    query = request.query_params
    state = query.get("state") or None
    if state is not None and state not in DELIVERY_STATES:
        raise Malformed(f"state must be one of {', '.join(DELIVERY_STATES)}")
    return JSONResponse({"deliveries": await outbox.deliveries(
        subscription=query.get("subscription") or None, state=state,
        message_id=query.get("message_id") or None, limit=parse_limit(query.get("limit")))})


async def get_delivery(request: Request, *, outbox: Outbox) -> JSONResponse:
    found = await outbox.delivery(request.path_params["delivery_id"])
    if found is None:
        raise NotFound(f"no delivery {request.path_params['delivery_id']}")
    return JSONResponse(found)


async def redeliver(request: Request, *, outbox: Outbox, clock: Clock) -> JSONResponse:
    """Sends it again from now, with the same webhook-id (the event id) and a fresh retry schedule."""
    queued = await outbox.redeliver(ids=[request.path_params["delivery_id"]], now=utc_iso(clock()))
    if not queued:
        raise NotFound(f"no delivery {request.path_params['delivery_id']}")
    return JSONResponse({"redelivered": queued}, status_code=202)


def parse_limit(value: str | None) -> int:
    try:
        limit = int(value or 100)
    except ValueError:
        raise Malformed("limit must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Malformed(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise Malformed("since must be an ISO 8601 time, e.g. 2026-01-01T00:00:00Z") from None
