"""Which subscriptions an event goes to, and the body it carries."""

from __future__ import annotations

import base64

import orjson
import pytest

from gateway.forward.payload import body, event_type, wants, with_current
from gateway.forward.settings import Subscription
from gateway.model import Status, StatusEvent

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def subscription(**options: object) -> Subscription:
    return Subscription.model_validate({"name": "crm", "url": "https://crm.example.com/hooks", "secret": SECRET,
                                        **options})


def event(status: Status, *, provider: str = "twilio", endpoint: str = "twilio-main", at: int = 1) -> StatusEvent:
    return StatusEvent(provider=provider, endpoint=endpoint, message_id="SM1", status=status,
                       provider_status=status.value, received_at=f"2026-01-01T00:00:0{at}.000000Z",
                       raw={"MessageSid": "SM1"})


@pytest.mark.parametrize(("options", "sent", "expected"), [
    ({}, event(Status.SENT), True),
    ({"events": ["message.status.*"]}, event(Status.QUEUED), True),
    ({"events": ["message.status.delivered", "message.status.read"]}, event(Status.SENT), False),
    ({"events": ["message.status.delivered", "message.status.read"]}, event(Status.READ), True),
    ({"providers": ["vonage"]}, event(Status.SENT), False),
    ({"providers": ["vonage"]}, event(Status.SENT, provider="vonage", endpoint="vonage-main"), True),
    ({"endpoints": ["twilio-eu"]}, event(Status.SENT), False),
    ({"endpoints": ["twilio-main"]}, event(Status.SENT), True),
    ({"final_only": True}, event(Status.SENT), False),
    ({"final_only": True}, event(Status.UNDELIVERED), True),
], ids=["all", "glob", "not-listed", "listed", "other-provider", "provider", "other-endpoint", "endpoint",
        "not-final", "final"])
def test_filters(options: dict[str, object], sent: StatusEvent, expected: bool) -> None:
    assert wants(subscription(**options), sent) is expected


def test_the_body_carries_the_event_its_type_and_the_current_status() -> None:
    delivered, late_sent = event(Status.DELIVERED, at=1), event(Status.SENT, at=2)
    current = orjson.dumps({"status": "delivered", "final": True, "updated_at": delivered.received_at})
    sent = orjson.loads(with_current(body(late_sent, include_raw=False), current))
    assert (sent["type"], sent["timestamp"]) == ("message.status.sent", late_sent.received_at)
    assert sent["data"]["current"] == {"status": "delivered", "final": True, "updated_at": delivered.received_at}
    assert {k: v for k, v in sent["data"].items() if k != "current"} == {
        k: v for k, v in late_sent.to_json().items() if k != "raw"}
    with_raw = orjson.loads(with_current(body(late_sent, include_raw=True), current))
    assert with_raw["data"]["raw"] == {"MessageSid": "SM1"}
    assert event_type(delivered) == "message.status.delivered"


def test_an_incoming_message_is_message_received_and_status_globs_leave_it_out() -> None:
    message = StatusEvent(provider="twilio", endpoint="twilio-main", message_id="SM9", status=Status.RECEIVED,
                          provider_status="received", received_at="2026-01-01T00:00:01.000000Z",
                          direction="inbound", text="hi")
    assert event_type(message) == "message.received"
    assert wants(subscription(), message) and wants(subscription(events=["message.received"]), message)
    assert not wants(subscription(events=["message.status.*"]), message)
    sent = orjson.loads(with_current(body(message, include_raw=False), b'{"status":"received"}'))
    assert (sent["type"], sent["data"]["text"], sent["data"]["direction"]) == ("message.received", "hi", "inbound")
    with pytest.raises(ValueError):
        subscription(events=["message.status.received"])  # not a type: inbound is message.received
