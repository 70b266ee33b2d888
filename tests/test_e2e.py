"""The gateway as a real uvicorn process on loopback: SDK-signed callbacks, the store, the logs, SIGTERM."""

from __future__ import annotations

import time
import json
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import http_client
from tests.conftest import GatewayProcess, config_document, start_gateway
from tests.signing import (
    TWILIO_PATH,
    VONAGE_PATH,
    twilio_fields,
    twilio_request,
    vonage_payload,
    vonage_request,
)


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_callbacks_are_verified_stored_and_logged(gateway_process: GatewayProcess) -> None:
    with http_client.Client(base_url=gateway_process.url) as client:
        for status in ("sent", "delivered", "sent"):  # a late `sent` after `delivered`, and a retry
            headers, body = twilio_request(twilio_fields(status))
            assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200
        headers, body = vonage_request(vonage_payload("read"), iat=int(time.time()))
        assert client.post(VONAGE_PATH, headers=headers, content=body).status_code == 200
        forged_headers, forged = twilio_request(twilio_fields("failed"), token="forger")
        assert client.post(TWILIO_PATH, headers=forged_headers, content=forged).status_code == 403
    db = gateway_process.db
    assert rows(db, "SELECT provider, status FROM events ORDER BY seq") == [
        ("twilio", "sent"), ("twilio", "delivered"), ("vonage", "read")]
    current = rows(db, "SELECT m.provider, e.status FROM messages m JOIN events e ON e.id = m.event_id ORDER BY 1")
    assert current == [("twilio", "delivered"), ("vonage", "read")]
    logged = [json.loads(line) for line in gateway_process.events_log.read_text().splitlines()]
    assert [e["status"] for e in logged] == ["sent", "delivered", "sent", "read"]  # the log records every callback
    gateway_process.stop()
    access = [line for line in gateway_process.lines if "gateway.access" in line]
    assert len(access) == 5
    assert sum("outcome=duplicate" in line for line in access) == 1
    assert sum("outcome=invalid_signature" in line for line in access) == 1
    assert not any("forger" in line for line in gateway_process.lines)


def _send(client: http_client.Client, index: int) -> int | None:
    headers, body = twilio_request(twilio_fields("delivered", sid=f"SM{index:032d}"))
    try:
        return client.post(TWILIO_PATH, headers=headers, content=body).status_code
    except http_client.HTTPError:
        return None  # refused or cut off by the shutdown: never acknowledged, Twilio would retry


def test_sigterm_under_load_loses_nothing_acknowledged(gateway_process: GatewayProcess) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool, http_client.Client(base_url=gateway_process.url, timeout=30) as client:
        first = list(pool.map(lambda i: _send(client, i), range(200)))
        pending = [pool.submit(_send, client, i) for i in range(200, 600)]
        gateway_process.process.send_signal(signal.SIGTERM)
        later = [f.result() for f in pending]
    gateway_process.stop()
    assert gateway_process.shut_down_cleanly
    acknowledged = {f"SM{i:032d}" for i, code in enumerate(first + later) if code == 200}
    assert len(acknowledged) >= 200
    stored = {row[0] for row in rows(gateway_process.db, "SELECT message_id FROM events")}
    assert acknowledged <= stored


def test_two_workers_share_one_sqlite_file(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, config_document(tmp_path), "--workers", "2")
    try:
        client = http_client.Client(base_url=gateway.url, timeout=30)

        def send(index: int) -> int:
            status = ("delivered", "sent", "delivered")[index % 3]  # a retry and a late `sent` per message
            headers, body = twilio_request(twilio_fields(status, sid=f"SM{index // 3:032d}"))
            return client.post(TWILIO_PATH, headers=headers, content=body).status_code

        with ThreadPoolExecutor(max_workers=16) as pool, client:
            codes = list(pool.map(send, range(600)))
        assert codes == [200] * 600
    finally:
        gateway.stop()
    assert gateway.shut_down_cleanly
    assert rows(gateway.db, "SELECT count(*) FROM events") == [(400,)]
    assert rows(gateway.db, "SELECT e.status, count(*) FROM messages m JOIN events e ON e.id = m.event_id"
                            " GROUP BY 1") == [("delivered", 200)]


@pytest.mark.parametrize("body", [b"\xff" * 10, b"%", b"=&=&&", b"MessageSid"], ids=["bytes", "pct", "empty", "bare"])
def test_garbage_never_gets_a_500(gateway_process: GatewayProcess, body: bytes) -> None:
    answer = http_client.post(gateway_process.url + TWILIO_PATH, content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"})
    assert answer.status_code in (400, 403)
    assert rows(gateway_process.db, "SELECT count(*) FROM events") == [(0,)]
