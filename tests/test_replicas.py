"""Several gateway replicas on one PostgreSQL, and PostgreSQL going away under load (real processes)."""

from __future__ import annotations

import asyncio
import os
import json
import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests import http_client
from tests.conftest import ENV, PUBLIC_URL, GatewayProcess, start_gateway
from harness.postgres import PostgresCluster
from tests.signing import TWILIO_PATH, VONAGE_PATH, twilio_fields, twilio_request, vonage_payload, vonage_request


def postgres_document(tmp_path: Path, dsn: str) -> dict[str, Any]:
    return {
        "server": {"public_url": PUBLIC_URL, "api_token": "replica-api-token-0123456789"},
        "endpoints": [
            {"name": "twilio-main", "provider": "twilio", "path": TWILIO_PATH, "auth_token": "${TWILIO_AUTH_TOKEN}"},
            {"name": "vonage-main", "provider": "vonage", "path": VONAGE_PATH,
             "signature_secret": "${VONAGE_SIGNATURE_SECRET}"},
        ],
        "sinks": [{"type": "postgres", "dsn": dsn, "pool_size": 4}],
    }


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(record) for record in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def replicas(tmp_path: Path, postgres_dsn: str) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_gateway(tmp_path / "a", postgres_document(tmp_path, postgres_dsn))
    second = start_gateway(tmp_path / "b", postgres_document(tmp_path, postgres_dsn))
    yield first, second
    first.stop()
    second.stop()


def test_two_replicas_store_each_callback_once_and_keep_every_status_right(
        replicas: tuple[GatewayProcess, GatewayProcess], postgres_dsn: str) -> None:
    a, b = replicas
    twilio_messages = [f"SM{index:032d}" for index in range(60)]
    vonage_messages = [f"00000000-0000-4000-8000-{index:012d}" for index in range(60)]
    # Each message: sent on one replica; delivered raced against a late sent on the two replicas;
    # the delivered retried on both at once. So every replica sees every kind of collision.
    jobs: list[tuple[str, str, dict[str, str], bytes]] = []
    for index, sid in enumerate(twilio_messages):
        first, second = (a, b) if index % 2 else (b, a)
        sent, delivered = twilio_request(twilio_fields("sent", sid=sid)), twilio_request(twilio_fields("delivered", sid=sid))
        jobs += [(first.url, TWILIO_PATH, *sent), (second.url, TWILIO_PATH, *delivered),
                 (first.url, TWILIO_PATH, *sent), (first.url, TWILIO_PATH, *delivered)]
    for index, uuid_ in enumerate(vonage_messages):
        first, second = (a, b) if index % 2 else (b, a)
        submitted = vonage_request(vonage_payload("submitted", uuid_=uuid_), iat=int(time.time()))
        delivered = vonage_request(vonage_payload("delivered", uuid_=uuid_), iat=int(time.time()))
        jobs += [(first.url, VONAGE_PATH, *submitted), (second.url, VONAGE_PATH, *delivered),
                 (first.url, VONAGE_PATH, *submitted), (first.url, VONAGE_PATH, *delivered)]

    def send(job: tuple[str, str, dict[str, str], bytes]) -> int:
        url, path, headers, body = job
        return http_client.post(url + path, headers=headers, content=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        codes = list(pool.map(send, jobs))
    assert codes == [200] * len(jobs)

    # Two distinct callbacks per message, each stored exactly once whatever replica and order.
    assert query(postgres_dsn, "SELECT count(*), count(DISTINCT id) FROM events") == [(240, 240)]
    current = dict(query(postgres_dsn, "SELECT m.message_id, e.status FROM messages m JOIN events e ON e.id = m.event_id"))
    assert current == {message: "delivered" for message in twilio_messages + vonage_messages}
    # Either replica answers for the shared state.
    answer = http_client.get(f"{b.url}/v1/messages/twilio/{twilio_messages[0]}",
                       headers={"Authorization": "Bearer replica-api-token-0123456789"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "delivered"
    assert sorted(e["status"] for e in answer.json()["events"]) == ["delivered", "sent"]


def test_postgres_outage_answers_503_then_recovers_without_losing_an_acknowledged_callback(tmp_path: Path) -> None:
    cluster = PostgresCluster()
    cluster.start()
    gateway = start_gateway(tmp_path, postgres_document(tmp_path, cluster.dsn()))
    try:
        counter = itertools.count()
        answers: dict[str, int | None] = {}

        def send_one() -> int | None:
            sid = f"SM{next(counter):032d}"
            headers, body = twilio_request(twilio_fields("delivered", sid=sid))
            try:
                code: int | None = http_client.post(gateway.url + TWILIO_PATH, headers=headers, content=body,
                                              timeout=30).status_code
            except http_client.HTTPError:
                code = None
            answers[sid] = code
            return code

        def load(until: Callable[[], bool]) -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                while not until():
                    list(pool.map(lambda _: send_one(), range(16)))

        load(lambda: sum(code == 200 for code in answers.values()) >= 100)
        cluster.stop()
        # Down: callbacks are refused with 503 + Retry-After (the provider retries), /readyz says so.
        headers, body = twilio_request(twilio_fields("delivered", sid="SM" + "f" * 32))
        refused = http_client.post(gateway.url + TWILIO_PATH, headers=headers, content=body, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"] == "sink_unavailable"
        assert int(refused.headers["retry-after"]) > 0
        assert http_client.get(gateway.url + "/readyz", timeout=30).status_code == 503
        load(lambda: sum(code == 503 for code in answers.values()) >= 20)
        cluster.start()
        deadline = time.monotonic() + 60
        while http_client.get(gateway.url + "/readyz", timeout=30).status_code != 200:  # polls a condition
            assert time.monotonic() < deadline, "the gateway did not recover"
        before = len(answers)
        load(lambda: len(answers) >= before + 100)
        assert all(code == 200 for sid, code in answers.items() if int(sid[2:]) >= before)
    finally:
        gateway.stop()
    stored = {row[0] for row in query(cluster.dsn(), "SELECT message_id FROM events")}
    cluster.stop()
    cluster.remove()
    acknowledged = {sid for sid, code in answers.items() if code == 200}
    assert acknowledged <= stored
    assert "SM" + "f" * 32 not in stored


def test_status_and_tail_read_the_postgres_store(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    from tests.test_cli import run, simulate, status_json

    a, b = replicas
    result = simulate(a, "twilio", "--scenario", "out-of-order", "--message-id", "SM" + "d" * 32)
    assert result.exit_code == 0, result.output
    answer = status_json(b, "SM" + "d" * 32)
    assert (answer["status"], [e["status"] for e in answer["events"]]) == ("delivered", ["delivered", "sent"])
    tail = run("tail", "-n", "2", "--json", "--config", str(b.tmp_path / "config.yaml")).output.splitlines()
    assert [json.loads(line)["status"] for line in tail] == ["delivered", "sent"]  # oldest first, as they came


def test_an_unreachable_postgres_stops_the_start_up_with_one_line_and_no_password(tmp_path: Path) -> None:
    document = postgres_document(tmp_path, "postgresql://gateway:hunter2-secret@127.0.0.1:1/gateway")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "config.yaml"),
                             "--port", "0"], capture_output=True, text=True, timeout=60, env={**os.environ, **ENV})
    assert result.returncode == 3
    assert "cannot start: cannot open the PostgreSQL store: ConnectionRefusedError" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
