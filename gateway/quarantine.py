"""Refused callbacks: kept off the hot path, explained, replayed (SPEC §11).

Neither provider retries a 4xx, so a wrong `public_url` or a secret missing from the config loses
every status it refuses. The gateway keeps each callback refused for its signature or token in a
bounded quarantine, in the store, so that `explain` can say what would make it verify and
`replay` can store it, once fixed, as if it had been accepted when it arrived.

Keeping one costs the request a copy into a per-endpoint buffer that never holds more than the
bounds (a flood of forgeries only pushes its own older entries out); a task writes the buffers
in batches, beside the callbacks. What a crash loses from the buffer was answered 4xx anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import metrics
from gateway.config import Config, QuarantineConfig, ServerConfig
from gateway.errors import ConfigError, GatewayError
from gateway.model import Refused, parse_utc_iso, utc_iso
from gateway.sinks import Store
from providers.base import Inbound, Provider

if TYPE_CHECKING:
    from gateway.webhook import CallbackRoute

log = logging.getLogger("gateway.quarantine")
# What every check may read besides the provider's own signature headers: the body's type, and
# where the request says it was sent (Twilio signs the URL).
CHECKED_HEADERS = ("content-type", "host", "x-forwarded-proto", "x-forwarded-host")
# Seconds between the quarantine's writes. Each write takes the store's write turn; written as
# fast as a flood refills the buffers, they held it most of the time and the valid callbacks'
# commits waited (docs/benchmarks.md, Refused callbacks). Within the bounds, a write a second
# keeps at most max_count rows per endpoint per second.
FLUSH_EVERY = 1.0


class Quarantine:
    """The per-process side: refused callbacks buffered within the bounds, written by a task."""

    def __init__(self, store: Store, settings: QuarantineConfig) -> None:
        self._store = store
        self._max_count = settings.max_count
        self._max_bytes = settings.max_bytes
        self._buffers: dict[str, deque[Refused]] = {}
        self._bytes: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def keep(self, endpoint: str, provider: Provider, inbound: Inbound, refusal: GatewayError) -> None:
        """Take a refused callback; never waits, never raises."""
        metrics.QUARANTINED.labels(endpoint, refusal.code).inc()
        if self._max_count == 0:
            return
        wanted = (*CHECKED_HEADERS, *provider.signature_headers)
        headers = {name: inbound.headers[name] for name in wanted if name in inbound.headers}
        refused = Refused(
            id=Refused.key(endpoint, inbound.method, inbound.url, headers, inbound.body),
            endpoint=endpoint, provider=provider.key, code=refusal.code, detail=str(refusal),
            method=inbound.method, url=inbound.url, query=inbound.query, headers=headers, body=inbound.body,
            received_at=utc_iso(inbound.received_at))
        own = refused.size
        if own > self._max_bytes:
            return
        buffer = self._buffers.setdefault(endpoint, deque())
        buffer.append(refused)
        size = self._bytes.get(endpoint, 0) + own
        while len(buffer) > self._max_count or size > self._max_bytes:
            size -= buffer.popleft().size  # what the store would drop first anyway
        self._bytes[endpoint] = size
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Write what is buffered, then end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(FLUSH_EVERY)

    async def _flush(self) -> None:
        batch = [refused for buffer in self._buffers.values() for refused in buffer]
        self._buffers.clear()
        self._bytes.clear()
        if not batch:
            return
        try:
            await self._store.quarantine(batch, max_count=self._max_count, max_bytes=self._max_bytes)
        except GatewayError as exc:  # the store is away: these were refused anyway; say so once per batch
            log.warning("%d refused callbacks could not be kept: %s", len(batch), exc)


def checked_url(refused: Refused, path: str, server: ServerConfig) -> str:
    """The URL a check would use now: the current public_url when there is one (fixing it is the
    usual cure), else the URL the request itself named when it arrived."""
    from gateway.webhook import joined_url

    return joined_url(server.public_url, path, refused.query) if server.public_url else refused.url


def inbound_of(refused: Refused, url: str) -> Inbound:
    """The request again, at its own time: a Vonage token's age is judged against its arrival."""
    return Inbound(method=refused.method, url=url, headers=refused.headers, body=refused.body,
                   received_at=parse_utc_iso(refused.received_at), query=refused.query)


def explain(refused: Refused, config: Config) -> list[str]:
    """What would make this refused callback verify, one plain sentence per finding."""
    try:
        endpoint = config.endpoint(refused.endpoint)
    except ConfigError:
        return [f"The config has no endpoint {refused.endpoint} any more: add it back to replay this callback."]
    if endpoint.provider != refused.provider:
        return [f"Endpoint {endpoint.name} is now a {endpoint.provider} endpoint, but this callback came to it "
                f"as {refused.provider}: it cannot be checked with that endpoint's settings."]
    url = checked_url(refused, endpoint.path, config.server)
    adapter = endpoint.adapter()
    inbound = inbound_of(refused, url)
    findings = []
    if url != refused.url:
        findings.append(f"It was checked against {refused.url}; with the current config it is checked against {url}.")
    try:
        adapter.verify(inbound)
    except GatewayError:
        others = [e.adapter() for e in config.endpoints if e.provider == endpoint.provider and e.name != endpoint.name]
        return findings + adapter.explain(inbound, others)
    return [*findings, f"It verifies with the current config: `status-gateway replay {refused.id}` stores it."]


@dataclass(frozen=True, slots=True)
class Replayed:
    refused: Refused
    kept: bool  # still in the quarantine
    outcome: str  # the callback's outcome (accepted, duplicate, part, unread …) or its refusal code
    detail: str


async def replay(records: Sequence[Refused], routes: dict[str, CallbackRoute], server: ServerConfig,
                 store: Store) -> list[Replayed]:
    """Each through its endpoint's callback path as it is configured now, at its original time.
    What verifies is stored (a duplicate of what is stored already adds nothing) and leaves the
    quarantine; what does not stays."""
    results = []
    for refused in records:
        route = routes.get(refused.endpoint)
        if route is None or route.provider.key != refused.provider:
            results.append(Replayed(refused, True, "no_endpoint",
                                    f"no {refused.provider} endpoint named {refused.endpoint} in the config"))
            continue
        inbound = inbound_of(refused, checked_url(refused, route.path, server))
        try:
            outcome, event, _ = await route.accept(inbound)
        except GatewayError as exc:
            results.append(Replayed(refused, True, exc.code, str(exc)))
            continue
        await store.forget_refused([refused.id])
        detail = f"{event.provider} {event.message_id} {event.status.value}" if event else outcome
        results.append(Replayed(refused, False, outcome, detail))
    return results
