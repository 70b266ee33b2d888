"""The app in-process: the README's HTTP answers, what is stored, the /v1 API, proxies and a locked store."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Config
from tests.conftest import API_TOKEN, NOW, PUBLIC_URL, TWILIO_TOKEN, VONAGE_SECRET, clock, config_document
from tests.signing import (
    TWILIO_PATH,
    VONAGE_PATH,
    VONAGE_SMS_PATH,
    twilio_fields,
    twilio_request,
    vonage_payload,
    vonage_request,
    vonage_sms_receipt,
    vonage_sms_sig,
)

TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def stored(tmp_path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(tmp_path / "gateway.db")
    return conn.execute("SELECT message_id, status FROM events ORDER BY seq").fetchall()


def logged(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_twilio_callback_is_stored_logged_and_answered_with_twiml(client: TestClient, tmp_path: Path) -> None:
    headers, body = twilio_request(twilio_fields("delivered"))
    answer = client.post(TWILIO_PATH, headers=headers, content=body)
    assert (answer.status_code, answer.content) == (200, TWIML)
    assert answer.headers["content-type"].startswith("text/xml")
    assert stored(tmp_path) == [("SM" + "a" * 32, "delivered")]
    (line,) = logged(tmp_path)
    assert (line["provider"], line["endpoint"], line["status"], line["final"]) == (
        "twilio", "twilio-main", "delivered", True)


def test_vonage_callback_is_answered_with_an_empty_200(client: TestClient, tmp_path: Path) -> None:
    headers, body = vonage_request(vonage_payload("submitted"))
    answer = client.post(VONAGE_PATH, headers=headers, content=body)
    assert (answer.status_code, answer.content) == (200, b"")
    assert stored(tmp_path) == [("aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "sent")]


def test_the_app_reads_its_injected_clock_not_the_wall_clock(client: TestClient, tmp_path: Path) -> None:
    """The test clock is years from the wall clock: a token issued now (wall time) is refused, one issued
    at the app's own now is taken, and the event's received_at is the app's now."""
    headers, body = vonage_request(vonage_payload("submitted"), iat=int(time.time()))
    refused = client.post(VONAGE_PATH, headers=headers, content=body)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")
    assert "max_token_age" in refused.json()["detail"]
    headers, body = vonage_request(vonage_payload("submitted"), iat=int(NOW.timestamp()) - 299)
    assert client.post(VONAGE_PATH, headers=headers, content=body).status_code == 200
    (line,) = logged(tmp_path)
    assert line["received_at"].startswith("2031-05-17T09:30:00.")


@pytest.mark.parametrize("how", ["GET", "form", "json"])
def test_vonage_sms_receipt_in_each_format_is_stored_and_answered_with_an_empty_200(
    client: TestClient, tmp_path: Path, how: str,
) -> None:
    fields = vonage_sms_receipt()
    fields["sig"] = vonage_sms_sig(fields)
    if how == "GET":
        answer = client.get(VONAGE_SMS_PATH, params=fields)
    elif how == "form":
        answer = client.post(VONAGE_SMS_PATH, data=fields)
    else:
        answer = client.post(VONAGE_SMS_PATH, json=fields)
    assert (answer.status_code, answer.content) == (200, b"")
    assert stored(tmp_path) == [("0A0000001234567B", "delivered")]
    (line,) = logged(tmp_path)
    assert (line["provider"], line["endpoint"], line["to"], line["from"]) == (
        "vonage", "vonage-sms-main", "447700900000", "AcmeInc")
    assert "sig" not in line["raw"]


def test_vonage_sms_receipt_without_sig_is_403_and_not_stored(client: TestClient, tmp_path: Path) -> None:
    answer = client.post(VONAGE_SMS_PATH, json={"messageId": "0A0000001234567B", "status": "delivered"})
    assert (answer.status_code, answer.json()["error"]) == (403, "invalid_signature")
    assert stored(tmp_path) == []


def test_a_repeated_callback_is_answered_200_and_stored_once(client: TestClient, tmp_path: Path) -> None:
    headers, body = twilio_request(twilio_fields("sent"))
    answers = [client.post(TWILIO_PATH, headers=headers, content=body) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.content == TWIML for a in answers)
    assert stored(tmp_path) == [("SM" + "a" * 32, "sent")]


def _form(**overrides: Any) -> dict[str, Any]:
    headers, body = twilio_request(twilio_fields())
    return {"method": "POST", "url": TWILIO_PATH, "headers": {**headers, **overrides.pop("headers", {})},
            "content": body, **overrides}


def _json(**overrides: Any) -> dict[str, Any]:
    headers, body = vonage_request(vonage_payload())
    return {"method": "POST", "url": VONAGE_PATH, "headers": {**headers, **overrides.pop("headers", {})},
            "content": body, **overrides}


def _chunks(size: int) -> Iterator[bytes]:
    yield b"a=" + b"x" * (size - 2)


REFUSALS: dict[str, tuple[dict[str, Any], int, str]] = {
    "twilio-no-signature": (_form(headers={"X-Twilio-Signature": ""}), 403, "invalid_signature"),
    "twilio-wrong-signature": (_form(headers={"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}), 403,
                               "invalid_signature"),
    "twilio-tampered": (_form(content=_form()["content"].replace(b"delivered", b"failed")), 403, "invalid_signature"),
    "twilio-other-endpoint": (_form(url="/webhooks/twilio/main?x=1"), 403, "invalid_signature"),
    "twilio-text-plain": (_form(headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    "twilio-latin1": (_form(headers={"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"}), 415,
                      "unsupported_media_type"),
    "twilio-no-content-type": (_form(headers={"Content-Type": ""}), 415, "unsupported_media_type"),
    "twilio-too-large": (_form(content=b"a=" + b"x" * 70000), 413, "too_large"),
    "twilio-chunked-too-large": (_form(content=_chunks(70000)), 413, "too_large"),
    "twilio-put": (_form(method="PUT"), 405, "method_not_allowed"),
    "trailing-slash": (_form(url=TWILIO_PATH + "/"), 404, "not_found"),
    "unknown-path": (_form(url="/webhooks/twilio/other"), 404, "not_found"),
    "vonage-bad-token": (_json(headers={"Authorization": "Bearer a.b.c"}), 401, "invalid_token"),
    "vonage-no-token": (_json(headers={"Authorization": ""}), 503, "unsigned_callback"),
    "vonage-form": (_json(headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
                    "unsupported_media_type"),
    "vonage-get": (_json(method="GET"), 405, "method_not_allowed"),
}


@pytest.mark.parametrize(("request_", "status", "code"), REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals_are_small_json_and_store_nothing(
    client: TestClient, tmp_path: Path, request_: dict[str, Any], status: int, code: str,
) -> None:
    answer = client.request(**request_)
    assert (answer.status_code, answer.json()["error"]) == (status, code)
    assert set(answer.json()) == {"error", "detail"}
    for secret in (TWILIO_TOKEN, VONAGE_SECRET, request_["headers"].get("X-Twilio-Signature") or "§",
                   request_["headers"].get("Authorization", "")[7:] or "§"):
        assert secret not in answer.text
    if status == 503:
        assert answer.headers["retry-after"] == "5"
    assert stored(tmp_path) == []


def test_signed_but_incomplete_callbacks_are_malformed(client: TestClient, tmp_path: Path) -> None:
    headers, body = twilio_request([("MessageStatus", "sent")])
    assert client.post(TWILIO_PATH, headers=headers, content=body).json()["error"] == "malformed"
    headers, body = vonage_request(b"[]")
    assert client.post(VONAGE_PATH, headers=headers, content=body).json()["error"] == "malformed"
    assert stored(tmp_path) == []


def test_signature_failure_logs_the_checked_url_and_no_secret(
    client: TestClient, caplog: pytest.LogCaptureFixture,
) -> None:
    headers, body = twilio_request(twilio_fields(), token="not-the-configured-token")
    with caplog.at_level(logging.DEBUG):
        assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 403
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and PUBLIC_URL + TWILIO_PATH in warning[0].getMessage()
    everything = caplog.text
    for secret in (TWILIO_TOKEN, "not-the-configured-token", headers["X-Twilio-Signature"]):
        assert secret not in everything


# --- the signed URL behind proxies (docs/twilio.md) --------------------------------------------------

def test_public_url_holds_behind_a_tls_proxy(make_config: Callable[..., Config]) -> None:
    with TestClient(create_app(make_config(), clock=clock), base_url="http://10.0.0.7:8000") as internal:
        headers, body = twilio_request(twilio_fields())  # Twilio signed https://gw.example.com/…
        assert internal.post(TWILIO_PATH, headers=headers, content=body).status_code == 200


@pytest.mark.parametrize(("trusted", "expected"), [(["testclient"], 200), ([], 403)], ids=["trusted", "untrusted"])
def test_forwarded_headers_count_only_from_trusted_proxies(
    tmp_path: Path, make_config: Callable[..., Config], trusted: list[str], expected: int,
) -> None:
    document = config_document(tmp_path, public_url="", trusted_proxies=trusted)
    with TestClient(create_app(make_config(document), clock=clock), base_url="http://10.0.0.7:8000") as internal:
        headers, body = twilio_request(twilio_fields())
        headers |= {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.com"}
        assert internal.post(TWILIO_PATH, headers=headers, content=body).status_code == expected


# --- a store that cannot take the event ------------------------------------------------------------

def test_locked_store_answers_503_then_recovers(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    document = config_document(tmp_path)
    document["sinks"][1]["busy_timeout_ms"] = 50
    with TestClient(create_app(make_config(document), clock=clock), base_url=PUBLIC_URL) as client:
        blocker = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        headers, body = twilio_request(twilio_fields())
        answer = client.post(TWILIO_PATH, headers=headers, content=body)
        assert (answer.status_code, answer.json()["error"], answer.headers["retry-after"]) == (
            503, "sink_unavailable", "5")
        assert client.get("/readyz").status_code == 503
        blocker.execute("ROLLBACK")
        assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200
        assert client.get("/readyz").status_code == 200
    assert stored(tmp_path) == [("SM" + "a" * 32, "delivered")]


def test_readyz_names_each_sink_and_fails_if_any_one_cannot_write(tmp_path: Path,
                                                                   make_config: Callable[..., Config]) -> None:
    """Two sinks of one type are two entries: the first one failing is not hidden by the second."""
    document = config_document(tmp_path)
    document["sinks"].insert(0, {"type": "log", "path": "/dev/full"})  # opens, and every write fails: ENOSPC
    with TestClient(create_app(make_config(document), clock=clock), base_url=PUBLIC_URL) as client:
        assert client.get("/readyz").json() == {
            "ready": True, "sinks": {"sinks.0:log": True, "sinks.1:log": True, "sinks.2:sqlite": True}}
        headers, body = twilio_request(twilio_fields())
        answer = client.post(TWILIO_PATH, headers=headers, content=body)
        assert (answer.status_code, answer.json()["error"]) == (503, "sink_unavailable")
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "ready": False, "sinks": {"sinks.0:log": False, "sinks.1:log": True, "sinks.2:sqlite": True}}


def metric(client: TestClient, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    series = 'gateway_callbacks_total{endpoint="twilio-main",outcome="accepted",provider="twilio"}'
    before = metric(client, series)  # the registry is the process's: other tests have counted too
    headers, body = twilio_request(twilio_fields())
    client.post(TWILIO_PATH, headers=headers, content=body)
    assert metric(client, series) == before + 1


@pytest.mark.parametrize(("method", "url", "status", "code", "allow"), [
    ("GET", "/no/such/path", 404, "not_found", None),
    ("POST", "/healthz", 405, "method_not_allowed", "GET, HEAD"),
    ("GET", "/webhooks/twilio/main/", 404, "not_found", None),  # a trailing slash changes the signed URL
], ids=["no-route", "wrong-method", "trailing-slash"])
def test_the_frameworks_own_refusals_are_rendered_like_ours(
        client: TestClient, method: str, url: str, status: int, code: str, allow: str | None) -> None:
    answer = client.request(method, url)
    allowed = answer.headers.get("allow")  # Starlette lists the methods in no fixed order
    assert (answer.status_code, answer.json()["error"]) == (status, code)
    assert (sorted(allowed.split(", ")) if allowed else None) == (allow.split(", ") if allow else None)
    assert set(answer.json()) == {"error", "detail"}


# --- /v1 -------------------------------------------------------------------------------------------

def send_twilio(client: TestClient, status: str, **extra: str) -> None:
    headers, body = twilio_request(twilio_fields(status, **extra))
    assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200


def test_message_shows_current_status_and_timeline(client: TestClient) -> None:
    for status in ("delivered", "sent"):  # out of order
        send_twilio(client, status)
    answer = client.get(f"/v1/messages/twilio/SM{'a' * 32}", headers=AUTH).json()
    assert (answer["status"], answer["provider_status"], answer["final"]) == ("delivered", "delivered", True)
    assert [e["status"] for e in answer["events"]] == ["delivered", "sent"]
    assert answer["updated_at"] == answer["events"][0]["received_at"]


def test_events_are_newest_first_and_filtered(client: TestClient) -> None:
    send_twilio(client, "sent")
    send_twilio(client, "undelivered", ErrorCode="30003")
    headers, body = vonage_request(vonage_payload("delivered"))
    client.post(VONAGE_PATH, headers=headers, content=body)
    events = client.get("/v1/events", headers=AUTH).json()["events"]
    assert [e["status"] for e in events] == ["delivered", "undelivered", "sent"]
    only = client.get("/v1/events?provider=twilio&status=undelivered&limit=5", headers=AUTH).json()["events"]
    assert [(e["status"], e["error_code"]) for e in only] == [("undelivered", "30003")]
    since = events[0]["received_at"]
    assert len(client.get(f"/v1/events?since={since}", headers=AUTH).json()["events"]) == 1


@pytest.mark.parametrize(("url", "headers", "status", "code"), [
    ("/v1/events", {}, 401, "unauthorized"),
    ("/v1/events", {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
    ("/v1/messages/twilio/SM404", AUTH, 404, "not_found"),
    ("/v1/events?status=done", AUTH, 400, "malformed"),
    ("/v1/events?limit=0", AUTH, 400, "malformed"),
    ("/v1/events?limit=x", AUTH, 400, "malformed"),
    ("/v1/events?since=yesterday", AUTH, 400, "malformed"),
], ids=["no-token", "wrong-token", "unknown-message", "bad-status", "zero-limit", "text-limit", "bad-since"])
def test_api_refusals(client: TestClient, url: str, headers: dict[str, str], status: int, code: str) -> None:
    answer = client.get(url, headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (status, code)
    assert API_TOKEN not in answer.text


def test_api_is_off_without_a_token(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    with TestClient(create_app(make_config(config_document(tmp_path, api_token="")), clock=clock), base_url=PUBLIC_URL) as c:
        assert c.get("/v1/events", headers=AUTH).status_code == 404
