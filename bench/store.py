"""How the stores hold up as they grow (issue 15): fill one with realistic events through its real
write path (Sink.write: the batcher, the SQLite writer process or PostgreSQL's batch statement,
and their triggers), and at each checkpoint measure the ingest rate and the reads /v1 serves.

    python -m bench.store --store sqlite
    python -m bench.store --store postgres --checkpoints 0,1000000,5000000,10000000

Reported per checkpoint: ingest rate over the next `--window` events (writes in flight as under
load), bytes per event on disk, and p50/p99 over `--samples` reads of each of: a message lookup
(current + timeline, as /v1/messages), /v1/events with a rare status (expired, 0.1 % of messages),
/v1/stats over the last 24 h and over all time. Reads run between fills, not during them: each
is the store's own method the route calls, without HTTP. Bounded by the last checkpoint; stops
by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gateway.model import Reason, Status, StatusEvent, utc_iso
from gateway.sinks import Store
from gateway.stats import Window

T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=30)  # the events' received_at run over a month
NUMBERS = ["+14155550", "+16045550", "+4477009", "+3361234", "+4915123", "+5511987"]  # US, CA, GB, FR, DE, BR
IN_FLIGHT = 4096  # writes awaiting their commit at once, as concurrent callbacks would
FAILURES = [("30003", Reason("unreachable", False, "Unreachable destination handset")),
            ("30005", Reason("invalid_number", True, "Unknown destination handset")),
            ("21610", Reason("opted_out", True, "Attempt to send to unsubscribed recipient")),
            ("30007", Reason("spam_filtered", True, "Message filtered"))]


def raw_fields(provider: str, sid: str, word: str, to: str, code: str | None) -> dict[str, Any]:
    """A callback's fields as the vendor sends them (about 1 kB of stored JSON with the event)."""
    if provider == "twilio":
        fields = {"AccountSid": "AC" + "7" * 32, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsSid": sid,
                  "MessageStatus": word, "SmsStatus": word, "To": to, "From": "+15005550006",
                  "MessagingServiceSid": "MG" + "3" * 32, "ChannelToAddress": to, "ChannelPrefix": "sms",
                  "ChannelInstallSid": "XE" + "5" * 32, "StructuredMessage": "false", "NumSegments": "1"}
        if code:
            fields["ErrorCode"] = code
        return fields
    return {"message_uuid": sid, "to": to.lstrip("+"), "from": "447700900001", "timestamp": "2026-10-01T00:00:00Z",
            "status": word, "channel": "sms", "client_ref": "order-1234567", "usage": {"currency": "EUR",
            "price": "0.0333"}, "destination": {"network_code": "23410"}, "sms": {"count_total": "1"},
            **({"error": {"type": f"https://developer.vonage.com/api-errors/messages#{code}", "title": code,
                          "detail": "Message failed"}} if code else {})}


def message_id(provider: str, index: int) -> str:
    """As the vendors make them, in no order: a Twilio SID, a Vonage UUID. (Ids in arrival order
    would make every index insert land at the end of its B-tree, which no real store sees.)"""
    digest = hashlib.md5(f"{provider}{index}".encode()).hexdigest()
    return "SM" + digest if provider == "twilio" else str(uuid.UUID(digest))


def events(total: int, seed: int = 1) -> Iterator[StatusEvent]:
    """`total` events of messages in blocks of 500: each block's first events, then its seconds,
    then its lasts, so a message's events are some thousand writes apart, as under load."""
    rng = random.Random(seed)
    messages = total // 3 + 1
    made, index = 0, 0
    while made < total:
        block = []
        for _ in range(500):
            provider = "twilio" if rng.random() < 0.6 else "vonage"
            words = (["queued", "sent"] if provider == "twilio" else ["submitted"])
            roll = rng.random()
            ending = "expired" if roll < 0.001 else "undelivered" if roll < 0.09 else "delivered"
            to = rng.choice(NUMBERS) + f"{rng.randrange(10 ** 5):05d}"
            created = T0 + SPAN * (index / messages)
            block.append((provider, message_id(provider, index), words + [ending], to, created, rng.randrange(2, 600)))
            index += 1
        for step in range(3):
            for provider, sid, words, to, created, delay in block:
                if step >= len(words) or made >= total:
                    continue
                word = words[step]
                status = {"queued": Status.QUEUED, "sent": Status.SENT, "submitted": Status.SENT,
                          "delivered": Status.DELIVERED, "undelivered": Status.UNDELIVERED,
                          "expired": Status.EXPIRED}[word]
                code, reason = (None, None)
                if status is Status.UNDELIVERED:
                    code, reason = FAILURES[hash(sid) % len(FAILURES)]
                elif status is Status.EXPIRED:
                    reason = Reason("expired", False, None)
                at = created + timedelta(seconds=0 if step == 0 else 1 if step < len(words) - 1 else delay)
                yield StatusEvent(
                    provider=provider, endpoint=f"{provider}-{'eu' if hash(to) % 2 else 'us'}", message_id=sid,
                    status=status, provider_status=word, error_code=code,
                    error_message=reason.description if reason else None, to=to, sender="+15005550006",
                    channel="sms", account="AC" + "7" * 32 if provider == "twilio" else "a1b2c3d4",
                    occurred_at=utc_iso(at) if provider == "vonage" else None, received_at=utc_iso(at),
                    raw=raw_fields(provider, sid, word, to, code), reason=reason)
                made += 1


async def fill(store: Store, source: Iterator[StatusEvent], count: int) -> float:
    """Writes `count` events with up to IN_FLIGHT awaiting commit; events per second."""
    started = time.perf_counter()
    pending: list[asyncio.Future[bool]] = []
    for _ in range(count):
        event = next(source, None)
        if event is None:
            break
        pending.append(store.write(event))
        if len(pending) >= IN_FLIGHT:
            await asyncio.gather(*pending[: IN_FLIGHT // 2])
            del pending[: IN_FLIGHT // 2]
    await asyncio.gather(*pending)
    return count / (time.perf_counter() - started)


async def timed(work: Any, samples: int) -> dict[str, float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 2)}


async def reads(store: Store, written: int, total: int, samples: int, rng: random.Random) -> dict[str, Any]:
    messages = max(1, written // 3)
    latest = T0 + SPAN * (messages / (total / 3 + 1)) if written else T0

    async def lookup() -> None:
        index = rng.randrange(messages)
        for provider in ("twilio", "vonage"):
            message = message_id(provider, index)
            if await store.current(provider, message) is not None:
                await store.timeline(provider, message)
                return

    return {
        "lookup": await timed(lookup, samples),
        "rare_status": await timed(lambda: store.recent(status=Status.EXPIRED, limit=100), samples),
        "stats_24h": await timed(lambda: store.stats(window=Window(latest - timedelta(hours=24)), by="provider"),
                                 max(5, samples // 4)),
        "stats_all": await timed(lambda: store.stats(window=Window(), by="country"), max(5, samples // 4)),
    }


async def size_of(store: Store, kind: str, where: Path | None, dsn: str | None) -> int:
    if kind == "sqlite":
        assert where is not None
        return sum(f.stat().st_size for f in where.parent.glob(where.name + "*"))
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    cluster, dsn, path = None, None, None
    store: Store
    if args.store == "sqlite":
        from gateway.sinks.sqlite import SQLiteSink

        path = workdir / "store.db"
        store = SQLiteSink(str(path))
    else:
        from gateway.sinks.postgres import PostgresSink
        from harness.postgres import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        dsn = cluster.new_database()
        store = PostgresSink(dsn, pool_size=4)
    await store.open()
    # Past the last checkpoint, a window more: its ingest rate is measured too.
    source, written, results = events(checkpoints[-1] + args.window), 0, []
    rng = random.Random(2)
    try:
        for checkpoint in checkpoints:
            while written < checkpoint:  # fill up to it, as fast as it goes
                step = min(500_000, checkpoint - written)
                await fill(store, source, step)
                written += step
                print(f"  {written:,} events", flush=True)
            if hasattr(store, "fold"):
                await store.fold()  # what a replica does every second anyway
            measured = {"events": written, "bytes_per_event": round(await size_of(store, args.store, path, dsn)
                                                                    / written) if written else None}
            measured |= await reads(store, written, checkpoints[-1] + args.window, args.samples, rng) if written else {}
            measured["ingest_per_s"] = round(await fill(store, source, args.window))
            written += args.window
            results.append(measured)
            print(measured, flush=True)
    finally:
        await store.close()
        if cluster is not None:
            cluster.stop()
            cluster.remove()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--checkpoints", default="0,1000000,5000000,10000000",
                        help="store sizes at which to measure (the store ends a --window past the last)")
    parser.add_argument("--window", type=int, default=200_000, help="events over which each ingest rate is measured")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--dir", default=os.environ.get("TMPDIR"), help="where the store's files go")
    parser.add_argument("--keep", action="store_true", help="keep the store's files")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(f"\n| events | ingest/s | bytes/event | lookup p50/p99 ms | rare status p50/p99 | stats 24 h p50/p99 |"
          f" stats all p50/p99 | ({args.store})")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        def cell(key: str) -> str:
            return f"{r[key]['p50_ms']} / {r[key]['p99_ms']}" if key in r else "–"
        print(f"| {r['events']:,} | {r.get('ingest_per_s', '–')} | {r['bytes_per_event'] or '–'} | {cell('lookup')} |"
              f" {cell('rare_status')} | {cell('stats_24h')} | {cell('stats_all')} |")


if __name__ == "__main__":
    main()
