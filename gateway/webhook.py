"""The callback path, top to bottom: size and media checks → Inbound → verify → parse → sinks → ack.

Each endpoint is served as a bare ASGI app, not a Starlette route: this is the one path that runs
for every callback, and Starlette's request, response and middleware objects cost more than
everything the gateway itself does here (docs/benchmarks.md). Everything else (health, metrics,
/v1) stays on Starlette.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

import orjson
from prometheus_client import Counter

from gateway import metrics
from gateway.clock import Clock
from gateway.config import ServerConfig
from gateway.errors import (
    GatewayError,
    Headers,
    InvalidSignature,
    InvalidToken,
    Malformed,
    MethodNotAllowed,
    TooLarge,
    Unsigned,
    UnsupportedMediaType,
    refusal,
)
from gateway.load import CallbackLoad
from gateway.model import Fragment, Status, StatusEvent, Unread, utc_iso
from gateway.quarantine import Quarantine
from gateway.sinks import Sink, Store
from providers.base import Inbound, Provider, split_content_type

log = logging.getLogger("gateway.access")
security_log = logging.getLogger("gateway.security")
unread_log = logging.getLogger("gateway.unread")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ClientGone(Exception):
    """The client closed the connection before its body arrived: nothing to verify, nobody to answer."""


class CallbackRoute:
    """One configured endpoint: the ASGI app that receives its provider's callbacks."""

    def __init__(self, *, endpoint: str, path: str, provider: Provider, sinks: Sequence[tuple[str, Sink]],
                 server: ServerConfig, clock: Clock, stored: Callable[[], None] | None = None,
                 load: CallbackLoad | None = None, store: Store | None = None,
                 quarantine: Quarantine | None = None) -> None:
        self.endpoint = endpoint
        self.path = path
        self.provider = provider
        self.server = server
        self.clock = clock
        self._stored = stored  # the forwarding dispatcher's wake-up: a new event may have deliveries
        self._store = store  # the first store: it keeps unread callbacks and parts of messages
        self._quarantine = quarantine  # keeps what is refused for its signature or token (SPEC §11)
        # Counted from a whole body on: a client that sends its body slowly (or never) is not load
        # that makes forwarding step back.
        self._load = load or CallbackLoad()
        self._ack_body, self._ack_headers = provider.ack[0], _answer_headers(*provider.ack)
        self._sinks = [sink for _, sink in sinks]  # each sink measures its own writes (gateway_sink_write_seconds)
        self._last_verified = metrics.LAST_VERIFIED.labels(endpoint)
        self._outcomes: dict[str, Counter] = {}
        self._statuses: dict[Status, Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        outcome, event, inbound = "accepted", None, None
        status, headers, body = 200, self._ack_headers, self._ack_body
        counted = False
        try:
            inbound = await self.read_inbound(scope, receive)
            self._load.started()
            counted = True
            outcome, event, answer = await self.accept(inbound)
            if answer is not None:
                body, headers = answer
        except GatewayError as exc:
            outcome = exc.code
            status, headers, body = refusal(exc)
            if isinstance(exc, InvalidSignature | InvalidToken | Unsigned) and inbound is not None:
                # Says which check failed and the URL checked (never a secret), so a proxy mix-up is visible.
                security_log.warning("%s refused on endpoint %s: %s", exc.code, self.endpoint, exc)
                if self._quarantine is not None:
                    self._quarantine.keep(self.endpoint, self.provider, inbound, exc)
        except ClientGone:
            outcome, status = "client_gone", 499
        except Exception:  # a bug: uvicorn answers 500 (the provider retries); counted as such
            outcome = "error"
            raise
        finally:
            if counted:
                self._load.ended()
            self._count(outcome, event)
        if status != 499:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        if log.isEnabledFor(logging.INFO):
            log.info("callback", extra={"access": {
                "provider": self.provider.name, "endpoint": self.endpoint, "outcome": outcome,
                "message_id": event.message_id if event else None, "status": event.status.value if event else None,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3), "http_status": status,
            }})

    async def accept(self, inbound: Inbound) -> tuple[str, StatusEvent | None, tuple[bytes, Headers] | None]:
        """Verify, parse and keep one callback: (outcome, the event stored or found stored, the
        answer's body and headers when it is not the ack). Raises the GatewayError it is refused
        with. A replay from the quarantine comes through here too, with its original time."""
        outcome, event, answer = "accepted", None, None
        fields = self.provider.verify(inbound)
        self._last_verified.set(inbound.received_at.timestamp())
        parsed = self.provider.parse(fields, inbound)
        parts: list[Fragment] | None = None
        if isinstance(parsed, Fragment):
            parts = await self.parts(parsed)
            outcome = "part" if parts is None else outcome if parts else "duplicate"
            parsed = self.provider.join(parts) if parts else None
        if isinstance(parsed, Unread):
            outcome = "unread"
            await self.keep(parsed, inbound)
        elif parsed is None:
            outcome = "not_a_status" if outcome == "accepted" else outcome
        else:
            event = parsed
            if not await self.deliver(event):
                outcome = "duplicate"
            elif self._stored is not None:
                self._stored()
            if parts and self._store is not None:  # the message is stored: its parts may go
                await self._store.forget_parts(self.endpoint, parts)
            # A retry gets the same answer: the provider did not get the first one.
            reply = self.provider.answer(event, inbound)
            if reply is not None:
                answer = reply[0], _answer_headers(*reply)
        return outcome, event, answer

    async def parts(self, part: Fragment) -> list[Fragment] | None:
        """Every part of the message once the store holds them all (this one kept durably first,
        so it may be acknowledged); None until then; [] if the message is stored already (a late
        retry of a part). Without a store each part is a message of its own."""
        if self._store is None:
            return [replace(part, number=1, total=1)]
        return await self._store.keep_part(self.endpoint, self.provider.name, part)

    async def keep(self, unread: Unread, inbound: Inbound) -> None:
        """Keep a genuine callback no parser reads: in the store, else (no store configured) in the
        log, whole; counted either way, so a new kind of webhook shows in the metrics."""
        received_at = utc_iso(inbound.received_at)
        if self._store is not None:
            await self._store.keep_unread(self.endpoint, self.provider.name, unread, received_at)
        else:
            unread_log.warning("unread callback kept in the log", extra={"access": {
                "endpoint": self.endpoint, "provider": self.provider.name, "kind": unread.kind,
                "received_at": received_at, "fields": orjson.dumps(unread.fields).decode()}})
        metrics.UNREAD.labels(self.provider.name, self.endpoint).inc()

    async def deliver(self, event: StatusEvent) -> bool:
        """Hand the event to every sink at once, wait for all; False if a store already had its id."""
        futures = [sink.write(event) for sink in self._sinks]
        new = True
        try:
            for future in futures:
                new = await future and new
            return new
        except BaseException:
            for future in futures:  # a second failure is the same outage: not worth a warning of its own
                future.add_done_callback(_consume)
            raise

    def _count(self, outcome: str, event: StatusEvent | None) -> None:
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = metrics.CALLBACKS.labels(self.provider.name, self.endpoint, outcome)
        counter.inc()
        if event is not None and outcome == "accepted":
            events = self._statuses.get(event.status)
            if events is None:
                events = self._statuses[event.status] = metrics.EVENTS.labels(self.provider.name, event.status.value)
            events.inc()
            if event.status is Status.UNKNOWN:
                metrics.UNKNOWN_STATUSES.labels(self.provider.name, event.provider_status[:64]).inc()
            if event.reason is not None:
                metrics.FAILURES.labels(self.provider.name, event.reason.category).inc()
                if not event.reason.mapped and event.error_code:
                    metrics.UNMAPPED_CODES.labels(self.provider.name, event.error_code[:64]).inc()

    async def read_inbound(self, scope: Scope, receive: Receive) -> Inbound:
        provider, server = self.provider, self.server
        method = scope["method"]
        if method not in provider.methods:
            raise MethodNotAllowed(f"{provider.name} callbacks are {' or '.join(provider.methods)}",
                                   provider.methods)
        headers = _headers(scope["headers"])
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise Malformed("the Content-Length header is not a number")
            if int(length) > server.max_body_bytes:
                raise TooLarge(f"the body is larger than {server.max_body_bytes} bytes")
        if method == "POST":
            media_type, parameters = split_content_type(headers.get("content-type", ""))
            if media_type not in provider.media_types:
                raise UnsupportedMediaType(
                    f"{provider.name} callbacks are {' or '.join(sorted(provider.media_types))}, "
                    f"not {media_type or 'untyped'}"
                )
            if parameters:
                charset = parameters.partition("charset=")[2].split(";")[0].strip().strip('"').lower()
                if charset and charset not in ("utf-8", "utf8"):
                    raise UnsupportedMediaType("only UTF-8 bodies are accepted")
        body = await _read_body(receive, server.max_body_bytes)
        query = scope["query_string"].decode("latin-1")
        return Inbound(
            method=method,
            url=_signed_url(scope, headers, self.path, query, server),
            headers=headers,
            body=body,
            received_at=self.clock(),
            query=query,
        )


def _answer_headers(body: bytes, media_type: str) -> Headers:
    return [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]


def _consume(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    # A repeated header is joined (RFC 9110 §5.3): two signatures then match nothing, as they should.
    headers: dict[str, str] = {}
    for key, value in raw:
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return headers


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if message["type"] == "http.request" and not message.get("more_body", False):
        if len(body) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        return body  # the usual case: the whole body in one message
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def _signed_url(scope: Scope, headers: dict[str, str], path: str, query: str, server: ServerConfig) -> str:
    """public_url + endpoint path + raw query; else the request's own URL (docs/twilio.md, Signature)."""
    base = server.public_url
    if base is None:
        scheme: str = scope["scheme"]
        host = headers.get("host", "")
        client = scope.get("client")
        if client and client[0] in server.trusted_proxies:
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
            host = headers.get("x-forwarded-host", host).split(",")[0].strip()
        base = f"{scheme}://{host}"
    return joined_url(base, path, query)


def joined_url(base: str, path: str, query: str) -> str:
    return f"{base}{path}?{query}" if query else f"{base}{path}"
