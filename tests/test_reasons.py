"""Why it failed (SPEC §9), through the whole app: every code of every vendor's table, signed as the
vendor signs it, stored, and read back from /v1 with its reason; codes no table knows; codes on
statuses that are no failure; where Vonage hides its code; events stored before reasons existed.

The expected categories come from tests/data/failure-codes.json (the research the tables were
made from), not from the tables themselves.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import load_config
from gateway.model import Status, StatusEvent
from gateway.sinks import sqlite_db
from tests.conftest import API_TOKEN, ENV, PUBLIC_URL, clock, config_document
from tests.signing import (
    ACCOUNT_SID,
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

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
RESEARCH = orjson.loads((Path(__file__).parent / "data" / "failure-codes.json").read_bytes())


@pytest.fixture
def client(tmp_path: Path) -> Any:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_document(tmp_path)))
    with TestClient(create_app(load_config(tmp_path / "config.yaml", ENV), clock=clock), base_url=PUBLIC_URL) as c:
        yield c


def twilio(client: TestClient, word: str, code: str | None, sid: str, **extra: str) -> None:
    fields = twilio_fields(word, sid=sid, **({"ErrorCode": code} if code else {}), **extra)
    headers, body = twilio_request(fields)
    assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200


def vonage(client: TestClient, payload: dict[str, Any]) -> None:
    headers, body = vonage_request(payload)
    assert client.post(VONAGE_PATH, headers=headers, content=body).status_code == 200


def vonage_sms(client: TestClient, word: str, code: str, message_id: str, **extra: str) -> None:
    fields = vonage_sms_receipt(word, **{"err-code": code, "messageId": message_id, **extra})
    assert client.post(VONAGE_SMS_PATH, json={**fields, "sig": vonage_sms_sig(fields)}).status_code == 200


def reason(client: TestClient, provider: str, message_id: str) -> dict[str, Any] | None:
    answer = client.get(f"/v1/messages/{provider}/{message_id}", headers=AUTH).json()
    return answer["events"][-1]["reason"]  # type: ignore[no-any-return]


def failures(provider: str) -> list[tuple[str, dict[str, Any]]]:
    return [(code, fact) for code, fact in RESEARCH[provider].items() if fact["category"]]


def expected(fact: dict[str, Any]) -> dict[str, Any]:
    return {"category": fact["category"], "permanent": fact["permanent"], "description": fact["title"]}


def test_every_twilio_code_gives_its_reason(client: TestClient) -> None:
    codes = failures("twilio")
    assert len(RESEARCH["twilio"]) == 69 and len(codes) == 67  # 30025 and 30026 are warnings
    for index, (code, fact) in enumerate(codes):
        sid = f"SM{index:032d}"
        twilio(client, "undelivered", code, sid)
        assert reason(client, "twilio", sid) == expected(fact), code


def test_every_vonage_messages_code_gives_its_reason(client: TestClient) -> None:
    codes = failures("vonage_messages")
    assert len(codes) == 51
    for index, (code, fact) in enumerate(codes):
        uuid_ = f"aaaaaaaa-bbbb-cccc-dddd-{index:012d}"
        vonage(client, vonage_payload("rejected", uuid_, error={
            "type": f"https://developer.vonage.com/api-errors/messages#{code}", "title": fact["title"]}))
        assert reason(client, "vonage", uuid_) == expected(fact), code


def test_every_sms_api_code_gives_its_reason(client: TestClient) -> None:
    codes = failures("vonage_sms")
    assert len(RESEARCH["vonage_sms"]) == 23 and len(codes) == 22  # 0 is "delivered"
    for index, (code, fact) in enumerate(codes):
        message_id = f"0A{index:014d}"
        vonage_sms(client, "failed", code, message_id)
        assert reason(client, "vonage", message_id) == expected(fact), code


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0


def test_a_code_no_table_knows_is_unknown_temporary_and_counted(client: TestClient) -> None:
    before = counted("gateway_unmapped_error_codes_total", provider="twilio", code="39999")
    failed_before = counted("gateway_failures_total", provider="twilio", category="unknown")
    twilio(client, "undelivered", "39999", "SM" + "9" * 32)
    twilio(client, "undelivered", "39999", "SM" + "9" * 32)  # a retry: stored once, counted once
    assert reason(client, "twilio", "SM" + "9" * 32) == {"category": "unknown", "permanent": False,
                                                         "description": None}
    got = client.get(f"/v1/messages/twilio/{'SM' + '9' * 32}", headers=AUTH).json()
    assert got["events"][-1]["error_code"] == "39999"  # the code stays on the event
    assert counted("gateway_unmapped_error_codes_total", provider="twilio", code="39999") == before + 1
    assert counted("gateway_failures_total", provider="twilio", category="unknown") == failed_before + 1


def test_a_code_on_a_status_that_is_no_failure_gives_no_reason(client: TestClient) -> None:
    twilio(client, "delivered", "30018", "SM" + "1" * 32)  # Twilio may leave a warning's code on delivered
    got = client.get(f"/v1/messages/twilio/{'SM' + '1' * 32}", headers=AUTH).json()
    assert (got["events"][-1]["error_code"], got["events"][-1]["reason"]) == ("30018", None)
    vonage(client, vonage_payload("delivered", "bbbbbbbb-bbbb-cccc-dddd-0123456789ab", error={"title": 1250}))
    assert reason(client, "vonage", "bbbbbbbb-bbbb-cccc-dddd-0123456789ab") is None


@pytest.mark.parametrize(("word", "category"), [("failed", "provider_error"), ("undelivered", "unknown")])
def test_a_twilio_failure_without_a_code_falls_back(client: TestClient, word: str, category: str) -> None:
    twilio(client, word, None, "SM" + "2" * 32)
    assert reason(client, "twilio", "SM" + "2" * 32) == {"category": category, "permanent": False,
                                                         "description": None}


@pytest.mark.parametrize(("error", "code", "category"), [
    # the #NNNN ending error.type comes first, whatever the title says
    ({"type": "https://developer.vonage.com/api-errors/messages#1240", "title": "1250", "detail": "x"},
     "1240", "opted_out"),
    ({"type": "https://developer.vonage.com/api-errors/messages-olympus", "title": 1300}, "1300", "invalid_number"),
    ({"type": "https://developer.vonage.com/api-errors/messages-olympus", "title": "1210"}, "1210", "spam_filtered"),
    ({"code": 1300, "reason": "Not part of the provider network"}, "1300", "invalid_number"),  # v0.1
    ({"title": "Throttled", "detail": "too fast"}, None, "unknown"),  # no code: rejected's fallback
])
def test_each_place_a_vonage_code_hides(client: TestClient, error: dict[str, Any], code: str | None,
                                        category: str) -> None:
    vonage(client, vonage_payload("rejected", error=error))
    event = client.get("/v1/messages/vonage/aaaaaaaa-bbbb-cccc-dddd-0123456789ab", headers=AUTH).json()["events"][-1]
    assert (event["error_code"], event["reason"]["category"]) == (code, category)
    assert event["error_message"] == (error.get("detail") or error.get("reason") or event["reason"]["description"]
                                      or error.get("title"))


def test_the_older_vonage_shape_is_read_whole(client: TestClient) -> None:
    """Issue 14: v0.1's error {code, reason} and to {type, number} were stored as nulls."""
    vonage(client, {"message_uuid": "cccccccc-bbbb-cccc-dddd-0123456789ab", "timestamp": "2020-01-01T14:00:00.000Z",
            "to": {"type": "sms", "number": "447700900000"}, "from": {"type": "sms", "number": "447700900001"},
            "status": "rejected", "error": {"code": 1300, "reason": "Not part of the provider network"}})
    event = client.get("/v1/messages/vonage/cccccccc-bbbb-cccc-dddd-0123456789ab", headers=AUTH).json()["events"][0]
    assert (event["error_code"], event["error_message"], event["channel"], event["to"]) == (
        "1300", "Not part of the provider network", "sms", "447700900000")
    assert event["reason"] == {"category": "invalid_number", "permanent": True,
                               "description": "Not part of the provider network"}


def test_vonage_fallbacks_without_a_code(client: TestClient) -> None:
    vonage(client, vonage_payload("undeliverable", "dddddddd-bbbb-cccc-dddd-0123456789ab"))
    assert reason(client, "vonage", "dddddddd-bbbb-cccc-dddd-0123456789ab")["category"] == "provider_error"  # type: ignore[index]
    vonage_sms(client, "expired", "0", "0A000000000000EE")
    assert reason(client, "vonage", "0A000000000000EE") == {"category": "expired", "permanent": False,
                                                            "description": None}


def test_sms_api_undelivered_is_a_failure_not_unknown(client: TestClient) -> None:
    """Issue 14: `undelivered` is in Vonage's receipt guide; it left the message `sent` for ever."""
    vonage_sms(client, "accepted", "0", "0A00000000000042")
    vonage_sms(client, "undelivered", "5", "0A00000000000042")
    got = client.get("/v1/messages/vonage/0A00000000000042", headers=AUTH).json()
    assert (got["status"], got["final"], got["events"][-1]["reason"]["category"]) == ("undelivered", True, "unroutable")


def test_a_zone_less_carrier_time_never_sits_after_the_vendors_push(client: TestClient) -> None:
    """Issue 14: a UK summer scts (local time, no zone) read as UTC came an hour after Vonage pushed."""
    vonage_sms(client, "delivered", "0", "0A00000000000043", scts="2607011230",
               **{"message-timestamp": "2026-07-01 11:30:04"})  # 12:30 BST is 11:30 UTC
    got = client.get("/v1/messages/vonage/0A00000000000043", headers=AUTH).json()
    assert got["events"][0]["occurred_at"] == "2026-07-01T11:30:04.000000Z"
    twilio(client, "delivered", None, "SM" + "3" * 32, RawDlrDoneDate="3105180930")  # after it arrived (2031-05-17)
    assert client.get(f"/v1/messages/twilio/{'SM' + '3' * 32}", headers=AUTH).json()["events"][0][
        "occurred_at"] <= client.get(f"/v1/messages/twilio/{'SM' + '3' * 32}", headers=AUTH).json()["updated_at"]


def test_codes_the_old_short_table_did_not_describe(client: TestClient) -> None:
    for index, code in enumerate(("21610", "63018", "30011", "30034")):
        twilio(client, "failed", code, f"SM{index + 500:032d}")
        assert reason(client, "twilio", f"SM{index + 500:032d}")["description"] == RESEARCH["twilio"][code]["title"]  # type: ignore[index]
    vonage_sms(client, "rejected", "54", "0A00000000000054")
    assert reason(client, "vonage", "0A00000000000054")["description"] == "Regulation Error"  # type: ignore[index]


def test_filters_by_reason_and_tail_and_status_show_it(client: TestClient, tmp_path: Path) -> None:
    twilio(client, "undelivered", "30003", "SM" + "4" * 32)
    twilio(client, "failed", "21610", "SM" + "5" * 32)
    twilio(client, "delivered", None, "SM" + "6" * 32)
    opted_out = client.get("/v1/events?reason=opted_out", headers=AUTH).json()["events"]
    assert [e["message_id"] for e in opted_out] == ["SM" + "5" * 32]
    assert client.get("/v1/events?reason=bored", headers=AUTH).status_code == 400
    from click.testing import CliRunner

    from gateway.cli import main

    config = str(tmp_path / "config.yaml")
    tail = CliRunner().invoke(main, ["tail", "--reason", "unreachable", "--config", config], env=ENV)
    assert tail.exit_code == 0 and "SM" + "4" * 32 in tail.output and "reason=unreachable" in tail.output
    assert "SM" + "5" * 32 not in tail.output
    status = CliRunner().invoke(main, ["status", "SM" + "5" * 32, "--config", config], env=ENV)
    assert "reason opted_out (permanent: do not resend unchanged): Attempt to send to unsubscribed recipient" in (
        status.output)


def test_the_log_sink_writes_the_reason(client: TestClient, tmp_path: Path) -> None:
    twilio(client, "undelivered", "30007", "SM" + "7" * 32)
    lines = [orjson.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert lines[-1]["reason"]["category"] == "spam_filtered"


def test_a_failure_stored_before_reasons_reads_back_with_one_and_its_id(tmp_path: Path) -> None:
    """A store of schema 4 (before reasons): its failure events read back with the reason computed
    from the stored error code, and the same callback again is still the same event."""
    path = tmp_path / "gateway.db"
    conn = sqlite_db.connect(str(path))
    conn.execute("PRAGMA journal_mode = WAL")
    for statements in sqlite_db.MIGRATIONS[:4]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_document(tmp_path)))
    headers, body = twilio_request(twilio_fields("undelivered", sid="SM" + "8" * 32, ErrorCode="30005"))
    old = StatusEvent(provider="twilio", endpoint="twilio-main", message_id="SM" + "8" * 32,
                      status=Status.UNDELIVERED, provider_status="undelivered", error_code="30005",
                      error_message="Unknown destination handset", account=ACCOUNT_SID,
                      received_at="2026-01-01T00:00:00.000000Z")
    data = old.to_json()
    del data["reason"]  # as schema 4 wrote it
    row = (old.id, old.provider, old.message_id, "undelivered", 4, "", old.received_at, orjson.dumps(data))
    conn.execute("INSERT INTO events (id, provider, message_id, status, rank, occurred_at, received_at, body)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
    # (the schema's trigger makes it the message's current status)
    conn.close()
    with TestClient(create_app(load_config(tmp_path / "config.yaml", ENV), clock=clock),
                    base_url=PUBLIC_URL) as client_:
        got = client_.get(f"/v1/messages/twilio/{old.message_id}", headers=AUTH).json()
        assert got["events"][0]["reason"] == {"category": "invalid_number", "permanent": True,
                                              "description": "Unknown destination handset"}
        assert client_.post(TWILIO_PATH, headers=headers, content=body).status_code == 200
        again = client_.get(f"/v1/messages/twilio/{old.message_id}", headers=AUTH).json()
    assert [e["id"] for e in again["events"]] == [old.id]  # that callback again: the same event, stored once
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == sqlite_db.SCHEMA_VERSION
