"""Incoming messages through the whole app (SPEC §8): verified like a status, stored as inbound,
answered with the configured TwiML reply, and the reply's own statuses tracked on the same endpoint."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from urllib.parse import urlencode

import orjson
import yaml
from click.testing import CliRunner
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cli import main
from gateway.config import load_config
from tests.conftest import API_TOKEN, ENV, NOW, PUBLIC_URL, clock, config_document
from tests.signing import (
    ACCOUNT_SID,
    TWILIO_PATH,
    VONAGE_PATH,
    VONAGE_SMS_PATH,
    twilio_fields,
    twilio_request,
    vonage_request,
    vonage_sms_sig,
)

INCOMING_SID = "SM" + "1" * 32
REPLY_SID = "SM" + "2" * 32
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def incoming(body: str, sid: str = INCOMING_SID) -> tuple[dict[str, str], bytes]:
    return twilio_request([("MessageSid", sid), ("SmsSid", sid), ("AccountSid", ACCOUNT_SID), ("SmsStatus", "received"),
                           ("Body", body), ("NumMedia", "0"), ("From", "+15005550009"), ("To", "+15005550006")])


def gateway(tmp_path: Path, **reply: Any) -> TestClient:
    document = config_document(tmp_path)
    if reply:
        document["endpoints"][0]["reply"] = reply
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    return TestClient(create_app(load_config(tmp_path / "config.yaml", ENV), clock=clock), base_url=PUBLIC_URL)


def test_an_incoming_message_is_stored_answered_and_its_reply_tracked(tmp_path: Path) -> None:
    with gateway(tmp_path, text="Thanks, we got it & will call <today>.") as client:
        headers, body = incoming("Where is my order?")
        answers = [client.post(TWILIO_PATH, headers=headers, content=body) for _ in range(2)]  # and Twilio's retry
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].headers["content-type"] == "text/xml" and answers[0].content == answers[1].content
        message = ET.fromstring(answers[0].content).find("Message")
        assert message is not None and message.text == "Thanks, we got it & will call <today>."
        action = message.get("action")
        assert action == PUBLIC_URL + TWILIO_PATH == message.get("statusCallback")
        # Twilio sends the reply's statuses to the action URL: this endpoint, verified like any callback.
        for word in ("queued", "sent", "delivered"):
            headers, body = twilio_request(twilio_fields(word, sid=REPLY_SID), url=action)
            assert client.post(TWILIO_PATH, headers=headers, content=body).content.endswith(b"<Response/>")
        got = client.get(f"/v1/messages/twilio/{INCOMING_SID}", headers=AUTH).json()
        assert (got["status"], [e["direction"] for e in got["events"]]) == ("received", ["inbound"])  # stored once
        assert got["events"][0]["text"] == "Where is my order?"
        reply = client.get(f"/v1/messages/twilio/{REPLY_SID}", headers=AUTH).json()
        assert (reply["status"], [e["status"] for e in reply["events"]]) == ("delivered", ["queued", "sent", "delivered"])
        inbound = client.get("/v1/events?direction=inbound", headers=AUTH).json()["events"]
        outbound = client.get("/v1/events?direction=outbound", headers=AUTH).json()["events"]
        assert [e["message_id"] for e in inbound] == [INCOMING_SID]
        assert {e["message_id"] for e in outbound} == {REPLY_SID}
        assert client.get("/v1/events?direction=sideways", headers=AUTH).status_code == 400


def test_a_tampered_incoming_message_is_refused_and_not_stored(tmp_path: Path) -> None:
    with gateway(tmp_path, text="Thanks") as client:
        headers, body = incoming("hello")
        refused = client.post(TWILIO_PATH, headers=headers, content=body.replace(b"hello", b"HELLO"))
        assert refused.status_code == 403 and b"<Message" not in refused.content
        assert client.get("/v1/events", headers=AUTH).json()["events"] == []


def test_without_reply_the_answer_stays_empty_and_stop_gets_none(tmp_path: Path) -> None:
    with gateway(tmp_path) as client:
        headers, body = incoming("hello")
        assert client.post(TWILIO_PATH, headers=headers, content=body).content.endswith(b"<Response/>")
    (tmp_path / "stop").mkdir()
    with gateway(tmp_path / "stop", text="Thanks") as client:
        headers, body = incoming("STOP", sid="SM" + "3" * 32)
        assert client.post(TWILIO_PATH, headers=headers, content=body).content.endswith(b"<Response/>")


def test_tail_and_status_show_the_text_on_one_line(tmp_path: Path) -> None:
    with gateway(tmp_path) as client:
        headers, body = incoming("first line\nsecond line")
        assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200
    config = str(tmp_path / "config.yaml")
    tail = CliRunner().invoke(main, ["tail", "--config", config], env=ENV, catch_exceptions=False)
    assert "received" in tail.output and "'first line second line'" in tail.output
    status = CliRunner().invoke(main, ["status", INCOMING_SID, "--config", config], env=ENV, catch_exceptions=False)
    assert "from +15005550009: 'first line second line'" in status.output


# --- Vonage: the Messages API's inbound webhook, the SMS API's inbound SMS in parts -------------------

VONAGE_UUID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
LOCATION = {"channel": "whatsapp", "message_uuid": "52afe398-e31a-4362-8c42-beb0c3b1d098", "to": "447700900000",
            "from": "447700900001", "timestamp": "2031-05-17T09:29:00Z", "profile": {"name": "Jane Smith"},
            "message_type": "location", "location": {"lat": 40.34772, "long": -74.18847, "name": "Vonage"}}


def vonage_inbound(payload: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return vonage_request(payload, iat=int(NOW.timestamp()))


def sms_part(number: int, text: str, total: int = 3, message_id: str | None = None) -> dict[str, str]:
    fields = {"msisdn": "447700900001", "to": "447700900000", "messageId": message_id or f"0B000000420000{number:02d}",
              "text": text, "type": "text", "keyword": "LONG", "message-timestamp": "2031-05-17 09:29:00",
              "timestamp": "1937554140", "api-key": "abcd1234", "concat": "true", "concat-ref": "7",
              "concat-total": str(total), "concat-part": str(number)}
    return {**fields, "sig": vonage_sms_sig(fields)}


def unread_count(endpoint: str) -> float:
    return REGISTRY.get_sample_value("gateway_unread_callbacks_total", {"provider": "vonage", "endpoint": endpoint}) or 0


def test_vonage_inbound_messages_are_inbound_events_on_the_message_view(tmp_path: Path) -> None:
    with gateway(tmp_path) as client:
        whatsapp = {"channel": "whatsapp", "message_uuid": VONAGE_UUID, "to": "447700900000", "from": "447700900001",
                    "timestamp": "2031-05-17T09:29:00Z", "profile": {"name": "Jane Smith"}, "message_type": "image",
                    "image": {"url": "https://api-us.nexmo.com/v3/media/1111", "caption": "my receipt"}}
        headers, body = vonage_inbound(whatsapp)
        assert [client.post(VONAGE_PATH, headers=headers, content=body).status_code for _ in range(2)] == [200, 200]
        got = client.get(f"/v1/messages/vonage/{VONAGE_UUID}", headers=AUTH).json()
        assert (got["status"], got["final"], len(got["events"])) == ("received", True, 1)
        event = got["events"][0]
        assert (event["direction"], event["text"], event["channel"], event["from"]) == (
            "inbound", "my receipt", "whatsapp", "447700900001")
        assert event["media"] == [{"url": "https://api-us.nexmo.com/v3/media/1111", "content_type": None}]
        assert event["raw"]["profile"] == {"name": "Jane Smith"}
        inbound = client.get("/v1/events?direction=inbound", headers=AUTH).json()["events"]
        assert [e["message_id"] for e in inbound] == [VONAGE_UUID]


def test_a_genuine_callback_of_an_unread_kind_is_kept_answered_200_and_counted(tmp_path: Path) -> None:
    before = unread_count("vonage-main")
    with gateway(tmp_path) as client:
        headers, body = vonage_inbound(LOCATION)
        answers = [client.post(VONAGE_PATH, headers=headers, content=body) for _ in range(2)]  # and a retry
        assert [a.status_code for a in answers] == [200, 200]  # Vonage never retries a 4xx: a 400 loses it
        kept = client.get("/v1/unread", headers=AUTH).json()["unread"]
        assert [(u["endpoint"], u["provider"], u["fields"]) for u in kept] == [("vonage-main", "vonage", LOCATION)]
        assert "location" in kept[0]["kind"]
        assert unread_count("vonage-main") == before + 2
        # What is forged or broken is still refused, and kept nowhere.
        tampered = client.post(VONAGE_PATH, headers=headers, content=body.replace(b"Jane", b"John"))
        assert tampered.status_code == 401
        headers, body = vonage_inbound({"message_uuid": VONAGE_UUID, "status": ""})
        assert client.post(VONAGE_PATH, headers=headers, content=body).status_code == 400
        assert len(client.get("/v1/unread", headers=AUTH).json()["unread"]) == 1
        assert client.get("/v1/events", headers=AUTH).json()["events"] == []


def test_sms_api_parts_out_of_order_and_twice_are_stored_once_joined(tmp_path: Path) -> None:
    parts = {1: "This is a long message ", 2: "that came in ", 3: "three parts."}
    with gateway(tmp_path) as client:
        first_id = sms_part(1, parts[1])["messageId"]
        for number in (3, 2, 3):  # out of order, and a retry of a kept part
            answer = client.post(VONAGE_SMS_PATH, json=sms_part(number, parts[number]))
            assert (answer.status_code, answer.content) == (200, b"")
            assert client.get(f"/v1/messages/vonage/{first_id}", headers=AUTH).status_code == 404
        query = urlencode(sms_part(1, parts[1]))  # the last part by GET: each part may come its own way
        assert client.get(f"{VONAGE_SMS_PATH}?{query}").status_code == 200
        assert client.post(VONAGE_SMS_PATH, json=sms_part(2, parts[2])).status_code == 200  # a retry after the join
        got = client.get(f"/v1/messages/vonage/{first_id}", headers=AUTH).json()
        assert (got["status"], len(got["events"])) == ("received", 1)
        event = got["events"][0]
        assert (event["text"], event["direction"], event["to"], event["from"]) == (
            "This is a long message that came in three parts.", "inbound", "447700900000", "447700900001")
        assert [p["messageId"] for p in event["raw"]["parts"]] == [sms_part(n, "")["messageId"] for n in (1, 2, 3)]
        assert len(client.get("/v1/events", headers=AUTH).json()["events"]) == 1
        # A part whose signature does not match is refused and kept nowhere.
        forged = {**sms_part(1, "x", total=2, message_id="0C00000000000001"), "text": "changed"}
        assert client.post(VONAGE_SMS_PATH, json=forged).status_code == 403


def test_without_a_store_a_part_is_an_event_of_its_own_and_an_unread_callback_is_logged(
        tmp_path: Path, caplog: Any) -> None:
    document = config_document(tmp_path)
    document["sinks"] = [{"type": "log", "path": str(tmp_path / "events.jsonl")}]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    app = create_app(load_config(tmp_path / "config.yaml", ENV), clock=clock)
    with TestClient(app, base_url=PUBLIC_URL) as client, caplog.at_level("WARNING", logger="gateway.unread"):
        assert client.post(VONAGE_SMS_PATH, json=sms_part(2, "half")).status_code == 200
        headers, body = vonage_inbound(LOCATION)
        assert client.post(VONAGE_PATH, headers=headers, content=body).status_code == 200
    logged = [orjson.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["message_id"], e["text"], e["raw"]["concat-part"]) for e in logged] == [("0B00000042000002", "half", "2")]
    (record,) = [r for r in caplog.records if r.name == "gateway.unread"]
    assert orjson.loads(record.access["fields"]) == LOCATION and record.access["endpoint"] == "vonage-main"
