"""Forwarding under load: ingest with one subscription against the same without, delivery latency
at a steady rate, how fast a backlog drains, and that nothing acknowledged is lost.

    python -m bench.forward [--rounds 2] [--seconds 6] [--rate 1000] [--steady 10]

Everything on loopback: the gateway (SQLite store, one process), a fast subscriber
(bench.naive:receiver under uvicorn) and the load (wrk for ingest, a paced aiohttp client for the
steady rate). Prints a Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from twilio.request_validator import RequestValidator

from bench.naive import TWILIO_PATH
from bench.run import TWILIO_TOKEN, Server, ensure_wrk, http_get, start, twilio_requests, wrk
from gateway.cli import free_port

SECRET = "whsec_" + base64.b64encode(b"bench-forwarding-secret-0123456789").decode()


def forward_to(url: str) -> dict[str, Any]:
    return {"retry_schedule": [1, 5, 30], "timeout": 5,
            "subscriptions": [{"name": "bench", "url": url, "secret": SECRET}]}


def pending(db: Path) -> int:
    return int(sqlite3.connect(db).execute("SELECT count(*) FROM deliveries WHERE state != 'delivered'").fetchone()[0])


def arrivals(port: int) -> list[tuple[str, float, str]]:
    return [tuple(a) for a in orjson.loads(http_get(f"http://127.0.0.1:{port}/dump", timeout=60)[1])["arrivals"]]


def ingest(binary: str, workdir: Path, seconds: float, receiver_port: int | None) -> dict[str, Any]:
    """wrk at full speed; with a receiver, then the time the outbox takes to empty."""
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    forward = forward_to(f"http://127.0.0.1:{receiver_port}/hooks") if receiver_port else None
    server = start("gateway", port, run_dir, forward=forward)
    try:
        requests_file = run_dir / "requests.bin"
        requests_file.write_bytes(twilio_requests(port, 150_000, run_dir.name))
        result = wrk(binary, port, requests_file, TWILIO_PATH, seconds, wrap=False)
        result["backlog"] = 0
        if receiver_port:
            db = run_dir / "gateway.db"
            result["backlog"] = backlog = pending(db)
            began = time.monotonic()
            while pending(db):  # the harness (not a test) polls until the outbox is empty
                assert time.monotonic() - began < 600, "the backlog did not drain"
                time.sleep(0.05)
            result["drain_per_s"] = backlog / max(time.monotonic() - began, 1e-9)
            stored = {row[0] for row in sqlite3.connect(db).execute("SELECT id FROM events")}
            result["stored"] = len(stored)
            result["lost"] = len(stored - {a[0] for a in arrivals(receiver_port)})
        return result
    finally:
        server.stop()


async def steady(gateway_port: int, rate: int, seconds: float) -> int:
    """Sends `rate` new signed callbacks a second for `seconds`; the number answered 200."""
    validator = RequestValidator(TWILIO_TOKEN)
    url = f"http://127.0.0.1:{gateway_port}{TWILIO_PATH}"
    total = int(rate * seconds)
    prepared = []
    for index in range(total):
        sid = "SM" + hashlib.md5(f"steady{index}".encode()).hexdigest()
        params = {"AccountSid": "AC" + "0" * 32, "MessageSid": sid, "MessageStatus": "delivered",
                  "From": "+15005550001", "To": "+15005550006"}
        prepared.append((urlencode(params).encode(), validator.compute_signature(url, params)))
    ok = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        async def one(body: bytes, signature: str) -> None:
            nonlocal ok
            async with session.post(url, data=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}) as answer:
                await answer.read()
                ok += answer.status == 200

        began = time.monotonic()
        tasks = []
        for index, (body, signature) in enumerate(prepared):
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not synchronizing anything
            tasks.append(asyncio.create_task(one(body, signature)))
        await asyncio.gather(*tasks)
    return ok


def latency(workdir: Path, rate: int, seconds: float, receiver_port: int) -> dict[str, Any]:
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    before = len(arrivals(receiver_port))
    server = start("gateway", port, run_dir, forward=forward_to(f"http://127.0.0.1:{receiver_port}/hooks"))
    try:
        acked = asyncio.run(steady(port, rate, seconds))
        db = run_dir / "gateway.db"
        while pending(db):  # the harness polls until the last delivery is in
            time.sleep(0.05)
    finally:
        server.stop()
    got = arrivals(receiver_port)[before:]
    delays = sorted(at - datetime.fromisoformat(received_at.replace("Z", "+00:00")).timestamp()
                    for _, at, received_at in got)
    return {"acked": acked, "delivered": len({a[0] for a in got}), "p50_ms": delays[len(delays) // 2] * 1000,
            "p99_ms": delays[int(len(delays) * 0.99)] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--steady", type=float, default=10.0)
    args = parser.parse_args()
    binary = ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        receiver_port = free_port()
        receiver: Server = start("receiver", receiver_port, workdir)
        try:
            plain, forwarded = [], []
            for _ in range(args.rounds):
                plain.append(ingest(binary, workdir, args.seconds, None))
                forwarded.append(ingest(binary, workdir, args.seconds, receiver_port))
            steady_run = latency(workdir, args.rate, args.steady, receiver_port)
        finally:
            receiver.stop()
    rps = statistics.median(r["rps"] for r in plain)
    frps = statistics.median(r["rps"] for r in forwarded)
    print(f"Rounds {args.rounds} x {args.seconds:g} s (wrk -t2 -c32), median; steady run {args.rate}/s for "
          f"{args.steady:g} s.\n")
    print("| measure | value | target |\n|---|---:|---:|")
    print(f"| ingest without forwarding | {rps:,.0f} req/s | |")
    print(f"| ingest with one subscription | {frps:,.0f} req/s | |")
    print(f"| ratio | {frps / rps:.2f} | ≥ 0.80 |")
    print(f"| backlog after the load (median) | {statistics.median(r['backlog'] for r in forwarded):,.0f} | |")
    print(f"| drain after the load (median) | {statistics.median(r['drain_per_s'] for r in forwarded):,.0f} "
          "deliveries/s | ≥ 2,000 |")
    print(f"| received → delivered at {args.rate}/s, p50 / p99 | {steady_run['p50_ms']:.1f} / "
          f"{steady_run['p99_ms']:.1f} ms | p99 ≤ 100 ms |")
    lost = sum(r["lost"] for r in forwarded) + steady_run["acked"] - steady_run["delivered"]
    print(f"| lost (acknowledged, never delivered) | {lost} of "
          f"{sum(r['stored'] for r in forwarded) + steady_run['acked']:,} | 0 |")


if __name__ == "__main__":
    main()
