"""One command, one run: the gateway against the floor and the naive handlers, interleaved over rounds.

    python -m bench.run [--rounds 3] [--seconds 8] [--requests 150000] [--out docs/benchmarks.md]

Every request the gateway sees is a new, correctly signed callback (no request is sent twice), so
it stores every one; afterwards the store is counted against the 200s wrk saw (lost). The
baselines store nothing, so they cycle through the same signed callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import yaml
from twilio.request_validator import RequestValidator

from bench.naive import ENDPOINTS, TWILIO_PATH, VONAGE_PATH
from gateway.cli import free_port

ROOT = Path(__file__).resolve().parents[1]
TWILIO_TOKEN = "bench_twilio_auth_token_0123456789abcdef"
VONAGE_SECRET = "bench_vonage_signature_secret_0123456789abcdef"
CONNECTIONS, THREADS = 32, 2
NOTES = "## Notes"
WARM = 30000  # enough unique callbacks for 2 s of warm-up without running out


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (Debian package)…", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], stdout=subprocess.DEVNULL).returncode:
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)  # a fresh machine
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk is not available")


def raw_request(port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def twilio_requests(port: int, count: int, tag: str) -> bytes:
    validator = RequestValidator(TWILIO_TOKEN)
    url = f"http://127.0.0.1:{port}{TWILIO_PATH}"
    out = []
    for index in range(count):
        sid = "SM" + hashlib.md5(f"{tag}{index}".encode()).hexdigest()
        status = ("sent", "delivered", "undelivered")[index % 3]
        params = {"AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsSid": sid,
                  "MessageStatus": status, "SmsStatus": status, "From": "+15005550001", "To": "+15005550006"}
        if status == "undelivered":
            params["ErrorCode"] = "30003"
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                   "X-Twilio-Signature": validator.compute_signature(url, params),
                   "I-Twilio-Idempotency-Token": str(uuid.uuid4())}
        out.append(raw_request(port, TWILIO_PATH, headers, urlencode(params).encode()))
    return b"\0".join(out)


def vonage_requests(port: int, count: int, tag: str) -> bytes:
    out = []
    now = int(time.time())
    for index in range(count):
        body = json.dumps({
            "message_uuid": str(uuid.UUID(hashlib.md5(f"{tag}{index}".encode()).hexdigest())),
            "to": "447700900000", "from": "447700900001", "timestamp": "2026-01-01T14:00:00.000Z",
            "status": ("submitted", "delivered", "rejected")[index % 3], "channel": "sms",
            "usage": {"currency": "EUR", "price": "0.0333"},
        }, separators=(",", ":")).encode()
        claims = {"iat": now, "jti": str(uuid.uuid4()), "iss": "Vonage", "api_key": "a1b2c3d",
                  "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
                  "payload_hash": hashlib.sha256(body).hexdigest()}
        token = jwt.encode(claims, VONAGE_SECRET, algorithm="HS256")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        out.append(raw_request(port, VONAGE_PATH, headers, body))
    return b"\0".join(out)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    workdir: Path

    def rss_mb(self) -> float:
        """Peak resident memory of the server and all its descendants (workers, SQLite writers), in MB."""
        pids, index = [self.process.pid], 0
        while index < len(pids):
            pids += [int(p) for p in subprocess.run(
                ["pgrep", "-P", str(pids[index])], capture_output=True, text=True).stdout.split()]
            index += 1
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def start(target: str, port: int, workdir: Path, workers: int = 1, dsn: str | None = None,
          forward: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Server:
    env = {**os.environ, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "VONAGE_SIGNATURE_SECRET": VONAGE_SECRET}
    python = [sys.executable]
    if target.startswith("gateway"):
        config = {
            "server": {"host": "127.0.0.1", "port": port, "public_url": "", "max_body_bytes": 65536},
            "endpoints": ENDPOINTS,
            "sinks": [{"type": "log", "path": str(workdir / "events.jsonl")},
                      {"type": "postgres", "dsn": dsn} if dsn else {"type": "sqlite", "path": str(workdir / "gateway.db")}],
            **({"forward": forward} if forward else {}),
            **(extra or {}),
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        command = python + ["-m", "gateway", "serve", "--config", str(workdir / "config.yaml"),
                            "--workers", str(workers)]
        out = open(workdir / "gateway.log", "wb")  # noqa: SIM115
    else:
        app = f"bench.naive:{target}"
        command = python + ["-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", "--no-access-log"]
        out = open(workdir / "naive.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while True:  # the harness (not a test) polls until the server answers
        try:
            if http_get(f"http://127.0.0.1:{port}/healthz", timeout=1)[0] in (200, 404):
                break
        except (aiohttp.ClientError, OSError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"{target} did not start; see {out.name}")
            time.sleep(0.1)
    return Server(process, workdir)


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """One GET with the project's HTTP client (aiohttp), from the harness's synchronous code."""
    async def get() -> tuple[int, bytes]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as answer:
                return answer.status, await answer.read()

    return asyncio.run(get())


def wrk(binary: str, port: int, requests_file: Path, path: str, seconds: float, wrap: bool) -> dict[str, Any]:
    env = {**os.environ, "BENCH_REQUESTS": str(requests_file), "BENCH_THREADS": str(THREADS),
           "BENCH_WRAP": "1" if wrap else "0"}
    result = subprocess.run(
        [binary, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", "--timeout", "10s", "--latency",
         "-s", str(ROOT / "bench" / "requests.lua"), f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("BENCH "))
    data: dict[str, Any] = json.loads(line[6:])
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def count_events_in(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def count_events(dsn: str) -> int:
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(count())


TARGETS = {  # name → (server, provider of the load, workers)
    "floor": ("floor", "twilio", 1),
    "naive_twilio": ("naive", "twilio", 1),
    "naive_vonage": ("naive", "vonage", 1),
    "ceiling_twilio": ("ceiling", "twilio", 1),
    "ceiling_vonage": ("ceiling", "vonage", 1),
    "gateway_twilio": ("gateway", "twilio", 1),
    "gateway_vonage": ("gateway", "vonage", 1),
    "gateway_twilio_w2": ("gateway", "twilio", 2),
    "gateway_vonage_w2": ("gateway", "vonage", 2),
    "gateway_twilio_pg": ("gateway_pg", "twilio", 1),
    "gateway_vonage_pg": ("gateway_pg", "vonage", 1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per target and round")
    parser.add_argument("--requests", type=int, default=150000,
                        help="unique signed callbacks per provider (>= 20000; must outlast --seconds)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    binary = ensure_wrk()
    port = free_port()
    scratch = Path(tempfile.mkdtemp(prefix="status-gateway-bench-"))
    files = {}
    for provider, make in (("twilio", twilio_requests), ("vonage", vonage_requests)):
        for kind, count in (("warm", WARM), ("load", max(args.requests, 20000))):
            files[provider, kind] = scratch / f"{provider}-{kind}.req"
            files[provider, kind].write_bytes(make(port, count, kind))
    print(f"signed {args.requests} unique callbacks per provider (+{WARM} warm-up each)", file=sys.stderr)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.targets.split(",")}
    cluster = None
    if any(TARGETS[name][0] == "gateway_pg" for name in results):
        from harness.postgres import PostgresCluster  # the throwaway server the tests use too

        cluster = PostgresCluster()
        cluster.start()
    for round_ in range(1, args.rounds + 1):
        for name in results:
            server_kind, provider, workers = TARGETS[name]
            workdir = scratch / f"{name}-{round_}"
            workdir.mkdir()
            dsn = cluster.new_database() if cluster and server_kind == "gateway_pg" else None
            # The previous target's store may still be on its way to disk: its writeback would stall
            # this target's fsyncs (p99 15-30 ms instead of 5 ms on this machine).
            os.sync()
            server = start(server_kind, port, workdir, workers, dsn)
            path = TWILIO_PATH if provider == "twilio" else VONAGE_PATH
            try:
                wrap = not server_kind.startswith("gateway")
                warm = wrk(binary, port, files[provider, "warm"], path, 2, wrap)
                run = wrk(binary, port, files[provider, "load"], path, args.seconds, wrap)
                if run["exhausted"]:
                    sys.exit(f"wrk ran out of unique callbacks after {run['requests']} requests; raise --requests")
                run["rss_mb"] = server.rss_mb()
            finally:
                server.stop()
            if server_kind.startswith("gateway"):
                stored = count_events(dsn) if dsn else count_events_in(workdir / "gateway.db")
                run["stored"] = stored  # warm-up and measured callbacks alike must all be there
                run["lost"] = max(0, warm["acked"] + run["acked"] - stored)
            shutil.rmtree(workdir, ignore_errors=True)  # counted: a full run would otherwise keep GBs
            results[name].append(run)
            print(f"round {round_} {name:<18} {run['rps']:>8.0f} req/s  p50 {run['p50_us'] / 1000:.2f} ms  "
                  f"p99 {run['p99_us'] / 1000:.2f} ms  rss {run['rss_mb']:.0f} MB  acked {run['acked']}"
                  + (f"  stored {run['stored']}  lost {run['lost']}" if "lost" in run else ""), file=sys.stderr)
    if cluster:
        cluster.stop()
        cluster.remove()
    shutil.rmtree(scratch, ignore_errors=True)
    report = render(results, args)
    out = Path(args.out)
    if out.exists() and NOTES in out.read_text():  # the hand-written analysis below the figures stays
        report += "\n" + NOTES + out.read_text().split(NOTES, 1)[1]
    out.write_text(report)
    print(report)


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def render(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        "# Benchmarks",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python -m bench.run --rounds {args.rounds} "
        f"--requests {args.requests}` on {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"wrk -t{THREADS} -c{CONNECTIONS} on the same machine. Each figure is the median of {args.rounds} "
        "interleaved rounds; every measured request is a new signed callback. The gateway verifies it, writes "
        "its log line and commits it to its store before answering: `gateway_*` to SQLite (synchronous=FULL, "
        "WAL), `*_pg` to a PostgreSQL 15 server on the same machine (started by the harness, default "
        "settings, fsync on); `*_w2` runs `--workers 2`. Peak RSS covers the gateway and all its processes "
        "(workers, SQLite writer), not PostgreSQL. `ceiling_*` is the gateway's own callback path (read, verify, "
        "parse, metrics, answer) with no sink and no access log: what the gateway could reach here if keeping "
        "an event cost nothing.",
        "",
        "| target | req/s | p50 ms | p99 ms | peak RSS MB | acked | lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        lost = sum(run.get("lost", 0) for run in runs) if name.startswith("gateway") else None
        lines.append(
            f"| {name} | {median(runs, 'rps'):,.0f} | {median(runs, 'p50_us') / 1000:.2f} | "
            f"{median(runs, 'p99_us') / 1000:.2f} | {median(runs, 'rss_mb'):.0f} | {sum(r['acked'] for r in runs):,} | "
            f"{'' if lost is None else lost} |")
    lines += ["", "| ratio | value | target |", "|---|---:|---:|"]
    for gateway, naive, target in (("gateway_twilio", "naive_twilio", 2.0), ("gateway_vonage", "naive_vonage", 2.0),
                                   ("gateway_twilio", "floor", 0.30), ("gateway_vonage", "floor", 0.30),
                                   ("ceiling_twilio", "naive_twilio", None), ("ceiling_vonage", "naive_vonage", None),
                                   ("gateway_twilio", "ceiling_twilio", None), ("gateway_vonage", "ceiling_vonage", None),
                                   ("gateway_twilio_w2", "naive_twilio", None), ("gateway_vonage_w2", "naive_vonage", None),
                                   ("gateway_twilio_pg", "naive_twilio", None), ("gateway_vonage_pg", "naive_vonage", None)):
        if gateway in results and naive in results:
            ratio = median(results[gateway], "rps") / median(results[naive], "rps")
            lines.append(f"| {gateway} / {naive} | {ratio:.2f} | {'' if target is None else f'≥ {target:.2f}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
