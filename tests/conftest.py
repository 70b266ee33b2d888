"""Shared fixtures: configs written to disk, an in-process app, a real gateway process on loopback."""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Config, load_config
from harness.postgres import PostgresCluster

# Property tests: a bounded run in CI; HYPOTHESIS_PROFILE=campaign for the long one (README, Security).
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("campaign", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TWILIO_TOKEN = "twilio_test_auth_token_0123456789abcdef"
VONAGE_SECRET = "vonage_test_signature_secret_0123456789abcdef"
VONAGE_SMS_SECRET = "vonage_sms_test_signature_secret_0123456789"
PUBLIC_URL = "https://gw.example.com"
API_TOKEN = "api-token-for-tests-0123456789"
# The in-process apps' clock, and the time the tests sign with: years from the wall clock, so a test
# that reads the wall clock anywhere fails, and so does nothing else when the suite runs late.
NOW = datetime(2031, 5, 17, 9, 30, 0, tzinfo=timezone.utc)


class TickingClock:
    """NOW, then a microsecond later at each reading: far from the wall clock, and still moving forward
    (events of one test get distinct received_at; 100,000 readings are a tenth of a second)."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return NOW + timedelta(microseconds=next(self._ticks))


clock = TickingClock()


VECTORS = json.loads((Path(__file__).parent / "data" / "vectors.json").read_text())


def vectors(provider: str, kind_prefix: str) -> list[dict[str, Any]]:
    return [v for v in VECTORS if v["provider"] == provider and v["kind"].startswith(kind_prefix)]


def config_document(tmp_path: Path, **server: Any) -> dict[str, Any]:
    return {
        "server": {"public_url": PUBLIC_URL, "api_token": API_TOKEN, **server},
        "endpoints": [
            {"name": "twilio-main", "provider": "twilio", "path": "/webhooks/twilio/main",
             "auth_token": "${TWILIO_AUTH_TOKEN}"},
            {"name": "vonage-main", "provider": "vonage", "path": "/webhooks/vonage/main",
             "signature_secret": "${VONAGE_SIGNATURE_SECRET}"},
            {"name": "vonage-sms-main", "provider": "vonage-sms", "path": "/webhooks/vonage-sms/main",
             "signature_secret": "${VONAGE_SMS_SIGNATURE_SECRET}"},  # md5hash, the Dashboard's default
        ],
        "sinks": [
            {"type": "log", "path": str(tmp_path / "events.jsonl")},
            {"type": "sqlite", "path": str(tmp_path / "gateway.db")},
        ],
    }


ENV = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "VONAGE_SIGNATURE_SECRET": VONAGE_SECRET,
       "VONAGE_SMS_SIGNATURE_SECRET": VONAGE_SMS_SECRET}


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(document: dict[str, Any] | None = None, env: dict[str, str] | None = None, **server: Any) -> Config:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document or config_document(tmp_path, **server)))
        return load_config(path, ENV if env is None else env)

    return make


@pytest.fixture
def client(make_config: Callable[..., Config]) -> Iterator[TestClient]:
    with TestClient(create_app(make_config(), clock=clock), base_url=PUBLIC_URL) as test_client:
        yield test_client


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Polls a condition with a deadline (the tests' one way to wait; nothing's order rests on it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.02)


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    url: str
    tmp_path: Path
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread = field(default_factory=threading.Thread)

    @property
    def db(self) -> Path:
        return self.tmp_path / "gateway.db"

    @property
    def events_log(self) -> Path:
        return self.tmp_path / "events.jsonl"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.pump.join(timeout)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code

    @property
    def shut_down_cleanly(self) -> bool:
        """uvicorn finishes its shutdown, then re-raises SIGTERM, so -15 is a clean exit too."""
        return self.process.returncode in (0, -signal.SIGTERM) and any(
            "Application shutdown complete" in line for line in self.lines)


def start_gateway(tmp_path: Path, document: dict[str, Any], *args: str,
                  env: dict[str, str] | None = None) -> GatewayProcess:
    """`python -m gateway serve --port 0`; the port is read from uvicorn's "running on" line.

    With --workers N the parent announces the port before the workers listen: wait for N start-ups.
    """
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(document))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path), "--port", "0", *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, **ENV, **(env or {})}, cwd=tmp_path,
    )
    started: queue.Queue[str | None] = queue.Queue()
    gateway = GatewayProcess(process, "", tmp_path)

    def pump() -> None:
        assert process.stderr is not None
        announced, ready = "", 0
        for line in process.stderr:
            gateway.lines.append(line)
            announced = line if "running on" in line else announced
            ready += "Application startup complete" in line
            if announced and ready == workers:
                started.put(announced)
                ready = -1  # told once
        started.put(None)

    gateway.pump = threading.Thread(target=pump, daemon=True)
    gateway.pump.start()
    line = started.get(timeout=60)
    if line is None:
        process.wait(10)
        gateway.pump.join(10)
        assert process.stderr is not None
        process.stderr.close()
        raise RuntimeError("gateway did not start:\n" + "".join(gateway.lines))
    match = re.search(r"running on (http://\S+:\d+)", line)
    assert match, line
    gateway.url = match.group(1)
    return gateway


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(tmp_path, config_document(tmp_path))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the session; each test takes a fresh database of it."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()
    cluster.remove()


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.new_database()
