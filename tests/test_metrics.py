"""/metrics and the access log, against real processes: counters move by exactly what was sent."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests import http_client
from tests.conftest import TWILIO_TOKEN, VONAGE_SECRET, config_document, start_gateway
from tests.signing import (
    TWILIO_PATH,
    VONAGE_PATH,
    twilio_fields,
    twilio_request,
    vonage_payload,
    vonage_request,
)


def scrape(client: http_client.Client) -> dict[str, float]:
    samples = {}
    for line in client.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def callbacks(samples: dict[str, float], provider: str, endpoint: str, outcome: str) -> float:
    return samples.get(
        f'gateway_callbacks_total{{endpoint="{endpoint}",outcome="{outcome}",provider="{provider}"}}', 0.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_counters_move_by_exactly_what_was_sent(tmp_path: Path, workers: int) -> None:
    gateway = start_gateway(tmp_path, config_document(tmp_path), "--workers", str(workers))
    # No keep-alive: each request is a new connection, so with two workers both take requests
    # and answer scrapes; the totals must still be exact.
    try:
        with http_client.Client(base_url=gateway.url, timeout=30, keepalive=False) as client:
            before = scrape(client)
            started = time.time()
            for index in range(7):
                headers, body = twilio_request(twilio_fields("delivered", sid=f"SM{index:032d}"))
                assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200
            for _ in range(3):  # retries of the last one
                assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200
            forged_headers, forged = twilio_request(twilio_fields(), token="forger")
            for _ in range(4):
                assert client.post(TWILIO_PATH, headers=forged_headers, content=forged).status_code == 403
            headers, body = vonage_request(vonage_payload("brand_new_status"), iat=int(time.time()))
            assert client.post(VONAGE_PATH, headers=headers, content=body).status_code == 200
            bad = {"Authorization": "Bearer x.y.z", "Content-Type": "application/json"}
            for _ in range(2):
                assert client.post(VONAGE_PATH, headers=bad, content=body).status_code == 401
            assert client.post(VONAGE_PATH, headers=headers, content=b"x" * 70000).status_code == 413
            after = scrape(client)
    finally:
        gateway.stop()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert callbacks(after, "twilio", "twilio-main", "accepted") - callbacks(before, "twilio", "twilio-main", "accepted") == 7
    assert callbacks(after, "twilio", "twilio-main", "duplicate") - callbacks(before, "twilio", "twilio-main", "duplicate") == 3
    assert callbacks(after, "twilio", "twilio-main", "invalid_signature") == 4
    assert callbacks(after, "vonage", "vonage-main", "invalid_token") == 2
    assert callbacks(after, "vonage", "vonage-main", "too_large") == 1
    assert delta('gateway_events_total{provider="twilio",status="delivered"}') == 7
    assert delta('gateway_events_total{provider="vonage",status="unknown"}') == 1
    assert delta('gateway_unknown_statuses_total{provider="vonage",provider_status="brand_new_status"}') == 1
    # Each sink instance is its own series: the log sink (sinks.0) and the store (sinks.1) took all 11.
    assert delta('gateway_sink_write_seconds_count{sink="sinks.0:log"}') == 11
    assert delta('gateway_sink_write_seconds_count{sink="sinks.1:sqlite"}') == 11
    last = after['gateway_last_verified_callback_timestamp_seconds{endpoint="twilio-main"}']
    assert started <= last <= time.time()


def test_json_access_log_has_one_line_per_request_and_no_secrets(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, config_document(tmp_path, log_format="json", log_level="debug"))
    try:
        with http_client.Client(base_url=gateway.url, timeout=30) as client:
            headers, body = twilio_request(twilio_fields("sent"))
            client.post(TWILIO_PATH, headers=headers, content=body)
            bad_headers, _ = twilio_request(twilio_fields("sent"), token="x")
            client.post(TWILIO_PATH, headers=bad_headers, content=body)
            vonage_headers, vonage_body = vonage_request(vonage_payload("submitted"), iat=int(time.time()))
            client.post(VONAGE_PATH, headers=vonage_headers, content=vonage_body)
    finally:
        gateway.stop()
    records = [json.loads(line) for line in gateway.lines if line.startswith("{")]
    access = [r for r in records if r["logger"] == "gateway.access"]
    assert [(r["provider"], r["outcome"], r["status"], r["http_status"]) for r in access] == [
        ("twilio", "accepted", "sent", 200), ("twilio", "invalid_signature", None, 403),
        ("vonage", "accepted", "sent", 200)]
    assert all(r["latency_ms"] >= 0 and r["endpoint"] for r in access)
    text = "".join(gateway.lines)
    token = vonage_headers["Authorization"].removeprefix("Bearer ")
    for secret in (TWILIO_TOKEN, VONAGE_SECRET, headers["X-Twilio-Signature"], bad_headers["X-Twilio-Signature"],
                   token, token.rsplit(".", 1)[1]):
        assert secret not in text
    assert re.search(r'"level": ?"warning"', text)
