"""The dispatcher: leases due deliveries from the store's outbox, sends each as a Standard Webhook,
records the attempt and schedules the next one. One per gateway process, never on a callback's path.

- The lease is committed before the request goes out, so a replica (or a restart) that finds it
  expired sends the delivery again, with the same webhook-id: at least once, never lost.
- Each attempt is bounded as a whole by `forward.timeout` (connect, send, the answer's headers and
  body: a receiver dripping bytes cannot hold it longer), and redirects are not followed.
- 2xx: delivered. 410: the subscription is disabled. Anything else, a timeout or a refused
  connection: retried by `retry_schedule` (±10 % jitter, never sooner than a 429/503's
  Retry-After); after the last wait, failed.
- At most `per_subscription` attempts of one subscription at once, so a slow subscriber cannot
  hold the others up.
- Callbacks come first: while many are being answered in this process, an attempt waits for its
  turn (gateway/load.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import aiohttp

from gateway import metrics
from gateway.clock import Clock, system_clock
from gateway.errors import SinkUnavailable
from gateway.forward import signing
from gateway.forward.payload import with_current
from gateway.forward.settings import ForwardConfig, Subscription
from gateway.load import CallbackLoad
from gateway.model import parse_utc_iso, utc_iso
from gateway.sinks.base import Attempt, Claimed, Outbox

log = logging.getLogger("gateway.forward")
POLL = 0.5  # seconds between looks at the outbox when nothing woke the dispatcher
CLAIM = 64  # deliveries leased at once
# A lease outlives its attempt (bounded by the timeout) and the attempt's record; a replica that
# died mid-send leaves its deliveries to the others when the lease ends.
LEASE_MARGIN = 5.0
class Dispatcher:
    def __init__(self, outbox: Outbox, forward: ForwardConfig, *, clock: Clock = system_clock,
                 per_subscription: int = 8, poll: float = POLL, load: CallbackLoad | None = None) -> None:
        self._outbox = outbox
        self._subscriptions = {s.name: s for s in forward.subscriptions}
        self._schedule = forward.retry_schedule
        self._timeout = forward.timeout
        self._clock = clock
        self._poll = poll
        self._per_subscription = per_subscription
        self._gates = {name: asyncio.Semaphore(per_subscription) for name in self._subscriptions}
        # Leased deliveries in this process at most: those being sent (per_subscription each) and
        # those whose record is being committed, which must not hold a sending slot (one commit
        # records a batch of them, and waiting for its fsync capped the rate at 8 per commit).
        self._room = 4 * CLAIM + per_subscription * max(1, len(self._subscriptions))
        self._inflight: dict[asyncio.Task[None], str] = {}
        self._load = load or CallbackLoad()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._outage_logged = False
        self._starved = False  # waiting because every slot is taken: a finished attempt frees one
        self._me = f"{socket.gethostname()}:{os.getpid()}"  # who holds a lease (deliveries.claimed_by)

    async def start(self) -> None:
        # Timeouts are the attempt's own deadline (asyncio.timeout), not aiohttp's per-phase ones.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._per_subscription * max(1, len(self._subscriptions))),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False)
        self._loop_task = asyncio.create_task(self._run(), name="forward-dispatcher")

    def wake(self) -> None:
        """A callback stored an event: look at the outbox now rather than at the next poll (unless
        the loop waits for room: then a new delivery changes nothing, and each useless pass of the
        loop cost the callbacks more than their outbox rows did)."""
        if not self._starved:
            self._wake.set()

    async def stop(self) -> None:
        """Lets in-flight attempts finish (each is bounded by the timeout); releases any left."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._inflight:
            _, left = await asyncio.wait(list(self._inflight), timeout=self._timeout + 1)
            # Their ids now: a task's done-callback drops it from _inflight.
            unfinished = [self._inflight[task] for task in left]
            for task in left:
                task.cancel()
            if left:
                await asyncio.gather(*left, return_exceptions=True)
                try:
                    await self._outbox.release(unfinished)
                except SinkUnavailable:
                    pass  # the leases run out by themselves
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        measured = 0.0
        while True:
            self._wake.clear()
            if time.monotonic() - measured >= 1.0:
                measured = time.monotonic()
                await self._measure_backlog()
            claimed: list[Claimed] = []
            room = self._room - len(self._inflight)
            if room > 0:
                claimed = await self._claim(min(room, CLAIM))
            for delivery in claimed:
                task = asyncio.create_task(self._attempt(delivery))
                self._inflight[task] = delivery.id
                task.add_done_callback(self._done)
            if len(claimed) < min(room, CLAIM) or room <= 0:
                self._starved = room <= 0
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass

    async def _measure_backlog(self) -> None:
        try:
            pending, oldest = await self._outbox.backlog()
        except SinkUnavailable:
            return
        metrics.FORWARD_BACKLOG.set(pending)
        age = (self._clock() - parse_utc_iso(oldest)).total_seconds() if oldest else 0
        metrics.FORWARD_OLDEST.set(max(0.0, age))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("a delivery attempt failed unexpectedly", exc_info=task.exception())
        # Only a loop waiting for room is woken (otherwise a claim now would find the same), and only
        # once there is room for a batch worth a claim (its transaction), not for each finished attempt.
        if self._starved and self._room - len(self._inflight) >= min(self._room, CLAIM) // 4:
            self._starved = False
            self._wake.set()

    async def _claim(self, limit: int) -> list[Claimed]:
        now = self._clock()
        lease_until = now + timedelta(seconds=2 * self._timeout + LEASE_MARGIN)
        try:
            claimed = await self._outbox.claim(now=utc_iso(now), lease_until=utc_iso(lease_until), limit=limit,
                                               by=self._me)
        except SinkUnavailable as exc:
            if not self._outage_logged:
                log.warning("forwarding paused: %s", exc)
                self._outage_logged = True
            return []
        self._outage_logged = False
        return claimed

    async def _attempt(self, delivery: Claimed) -> None:
        subscription = self._subscriptions.get(delivery.subscription)
        number = delivery.attempts + 1
        if subscription is None:  # removed from the config since it was queued
            now = utc_iso(self._clock())
            await self._finish(Attempt(delivery.id, number, now, None, "the subscription is no longer configured",
                                       0.0, "failed", now), delivery.subscription, delivery.created_at)
            return
        async with self._gates[subscription.name]:
            await self._load.turn()
            started = self._clock()
            status, error, retry_after, took = await self._send(subscription, delivery, started)
        await self._finish(self._outcome(delivery, subscription, number, started, status, error, retry_after, took),
                           subscription.name, delivery.created_at, disable=subscription.name if status == 410 else None)

    async def _send(self, subscription: Subscription, delivery: Claimed, started: datetime,
                    ) -> tuple[int | None, str | None, str | None, float]:
        assert self._session is not None
        body = with_current(delivery.body, delivery.current)
        headers = signing.headers(delivery.event_id, int(started.timestamp()), body, subscription.secret)
        began = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session.post(subscription.url, data=body, headers=headers,
                                              allow_redirects=False) as answer:
                    await answer.read()
                    status, retry_after = answer.status, answer.headers.get("Retry-After")
        except TimeoutError:
            error = f"no complete answer within {self._timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        return status, error, retry_after, (time.perf_counter() - began) * 1000

    def _outcome(self, delivery: Claimed, subscription: Subscription, number: int, started: datetime,
                 status: int | None, error: str | None, retry_after: str | None, took: float) -> Attempt:
        at = utc_iso(started)
        if status is not None and 200 <= status < 300:
            return Attempt(delivery.id, number, at, status, None, took, "delivered", at)
        if status == 410:
            log.warning("subscription %s answered 410 Gone: disabled", subscription.name)
            return Attempt(delivery.id, number, at, status, None, took, "disabled", at)
        step = number - delivery.schedule_from  # a redelivery starts the schedule again
        if step > len(self._schedule):
            return Attempt(delivery.id, number, at, status, error, took, "failed", at)
        wait = self._schedule[step - 1] * random.uniform(0.9, 1.1)
        if status in (429, 503) and retry_after:
            wait = max(wait, _seconds_until(retry_after, started))
        return Attempt(delivery.id, number, at, status, error, took, "pending",
                       utc_iso(self._clock() + timedelta(seconds=wait)))

    async def _finish(self, attempt: Attempt, subscription: str, received_at: str, disable: str | None = None) -> None:
        outcome = "retrying" if attempt.state == "pending" else attempt.state
        metrics.FORWARD_ATTEMPTS.labels(subscription, outcome).inc()
        if attempt.state == "delivered":
            took = self._clock() - parse_utc_iso(received_at)
            metrics.FORWARD_LATENCY.labels(subscription).observe(took.total_seconds())
        try:
            await self._outbox.finish(attempt, disable=disable)
        except SinkUnavailable as exc:  # the lease runs out and the delivery is sent again: at least once
            log.warning("could not record an attempt of delivery %s: %s", attempt.delivery_id, exc)


def _seconds_until(retry_after: str, now: datetime) -> float:
    """Retry-After as seconds (a number, or an HTTP date); 0 if it says neither."""
    text = retry_after.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - now).total_seconds())
