"""Which HTTP client can forward fast enough: each candidate POSTs to one raw ASGI receiver.

    python -m bench.clients [--requests 4000] [--concurrency 16] [--rounds 3]

The receiver is bench.naive:floor under uvicorn, in its own process on loopback; the client runs
here, so the figure that matters is the client's own CPU per request (process time), which is what
the dispatcher spends on the gateway's cores. Rounds are interleaved; medians are printed as a
Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp
import httpx
import orjson

from bench.run import start
from gateway.cli import free_port

BODY = orjson.dumps({"type": "message.status.delivered", "timestamp": "2026-12-02T00:00:00.000000Z",
                     "data": {"id": "0" * 32, "provider": "twilio", "message_id": "SM" + "0" * 32}})
HEADERS = {"content-type": "application/json", "webhook-id": "0" * 32, "webhook-timestamp": "1796000000",
           "webhook-signature": "v1," + "A" * 44}
Send = Callable[[str], Awaitable[int]]


async def run(send: Send, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, client CPU microseconds per request)."""
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            assert await send(url) == 200

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return requests / wall, cpu / requests * 1e6


async def with_httpx(url: str, requests: int, concurrency: int, module: object = httpx) -> tuple[float, float]:
    async with module.AsyncClient(limits=module.Limits(max_connections=concurrency)) as client:  # type: ignore[attr-defined]
        async def send(target: str) -> int:
            return int((await client.post(target, content=BODY, headers=HEADERS)).status_code)

        await send(url)
        return await run(send, url, requests, concurrency)


async def with_httpx2(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    import httpx2  # starlette.testclient's transport; measured, not used by the gateway

    return await with_httpx(url, requests, concurrency, httpx2)


async def with_aiohttp(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def send(target: str) -> int:
            async with session.post(target, data=BODY, headers=HEADERS, allow_redirects=False) as answer:
                await answer.read()
                return answer.status

        await send(url)
        return await run(send, url, requests, concurrency)


CANDIDATES = {"httpx": with_httpx, "httpx2": with_httpx2, "aiohttp": with_aiohttp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    with TemporaryDirectory() as workdir:
        server = start("floor", port, Path(workdir))
        try:
            url = f"http://127.0.0.1:{port}/hooks"
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in CANDIDATES}
            for _ in range(args.rounds):
                for name, measure in CANDIDATES.items():
                    results[name].append(asyncio.run(measure(url, args.requests, args.concurrency)))
        finally:
            server.process.terminate()
            server.process.wait(30)
    print(f"{args.requests} POSTs, {args.concurrency} at once, median of {args.rounds} interleaved rounds\n")
    print("| client | req/s | client CPU µs/request |\n|---|---:|---:|")
    for name, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"| {name} | {rate:,.0f} | {cpu:,.0f} |")


if __name__ == "__main__":
    main()
