"""Incoming messages through the whole app (SPEC §8): verified like a status, stored as inbound,
answered with the configured TwiML reply, and the reply's own statuses tracked on the same endpoint."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cli import main
from gateway.config import load_config
from tests.conftest import API_TOKEN, ENV, PUBLIC_URL, clock, config_document
from tests.signing import ACCOUNT_SID, TWILIO_PATH, twilio_fields, twilio_request

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
