"""Twilio adapter: every shared vector and every URL pitfall of docs/twilio.md, signed with the SDK."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import orjson
import pytest
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator

from gateway.errors import InvalidSignature, Malformed
from gateway.model import Status
from providers.base import Inbound
from providers.twilio import STATUSES, Twilio, TwilioSettings
from tests.conftest import TWILIO_TOKEN, vectors
from tests.providers.contract import URL as CONTRACT_URL
from tests.providers.contract import ProviderContract, Request
from tests.signing import ACCOUNT_SID, twilio_fields, twilio_request

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
URL = "https://gw.example.com/webhooks/twilio/main"


def adapter(*tokens: str, shared_keys: dict[str, str] | None = None) -> Twilio:
    settings = TwilioSettings(auth_token=list(tokens) or [TWILIO_TOKEN], shared_keys=shared_keys or {})
    return Twilio("twilio-main", settings)


def inbound(url: str, headers: dict[str, str], body: bytes = b"", method: str = "POST") -> Inbound:
    return Inbound(method=method, url=url, headers={k.lower(): v for k, v in headers.items()},
                   body=body, received_at=NOW, query=urlsplit(url).query)


def form(pairs: list[tuple[str, str]], url: str = URL, **kwargs: Any) -> Inbound:
    headers, body = twilio_request(pairs, url=url, **kwargs)
    return inbound(url, headers, body)


@pytest.mark.parametrize("vector", vectors("twilio", "x-twilio-signature"), ids=lambda v: v["id"])
def test_shared_vectors(vector: dict[str, Any]) -> None:
    """The SDK agrees with each vector, and the adapter gives the same verdict on the real request."""
    headers = {"X-Twilio-Signature": vector["signature"]}
    shared_keys = None
    if "body" in vector:
        headers["Content-Type"] = "application/json"
        body = vector["body"].encode()
        sdk_params: Any = vector["body"]
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode([tuple(p) for p in vector["params"]]).encode()
        sdk_params = ImmutableMultiDict([tuple(p) for p in vector["params"]])
    if "algorithm" in vector:
        headers["X-Twilio-Webhooks-Signature-Settings"] = f"key=webhooks_sharedkey_1,algorithm={vector['algorithm']}"
        shared_keys = {"webhooks_sharedkey_1": vector["auth_token"]}
    sdk = RequestValidator(vector["auth_token"]).validate(
        vector["url"], sdk_params, vector["signature"], vector.get("algorithm"))
    assert sdk is vector["expected_valid"]
    request = inbound(vector["url"], headers, body)
    twilio = adapter(vector["auth_token"], shared_keys=shared_keys)
    if vector["expected_valid"]:
        fields = twilio.verify(request)
        for name, value in vector["params"]:
            assert value in (fields[name] if isinstance(fields[name], list) else [fields[name]])
    else:
        with pytest.raises(InvalidSignature):
            twilio.verify(request)


def test_sha256_signature_is_refused_without_the_settings_header() -> None:
    (vector,) = [v for v in vectors("twilio", "x-twilio") if v["id"] == "tw-sha256-synthetic"]
    request = inbound(vector["url"], {"X-Twilio-Signature": vector["signature"],
                                      "Content-Type": "application/x-www-form-urlencoded"},
                      urlencode([tuple(p) for p in vector["params"]]).encode())
    with pytest.raises(InvalidSignature):
        adapter(vector["auth_token"]).verify(request)


def test_unknown_shared_key_id_is_refused() -> None:
    request = form(twilio_fields(), token="shared-secret", algorithm="HMAC_SHA256")
    request = inbound(URL, {**request.headers, "X-Twilio-Webhooks-Signature-Settings":
                            "key=webhooks_sharedkey_other,algorithm=HMAC_SHA256"}, request.body)
    with pytest.raises(InvalidSignature, match="shared_keys"):
        adapter(shared_keys={"webhooks_sharedkey_1": "shared-secret"}).verify(request)


def test_missing_signature_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="missing"):
        adapter().verify(inbound(URL, {"Content-Type": "application/x-www-form-urlencoded"}, b"a=b"))


# --- docs/twilio.md pitfalls ------------------------------------------------------------------------

def test_rotation_accepts_every_configured_token() -> None:
    request = form(twilio_fields(), token="new-token-after-rotation")
    assert adapter(TWILIO_TOKEN, "new-token-after-rotation").verify(request)["MessageStatus"] == "delivered"
    with pytest.raises(InvalidSignature):
        adapter(TWILIO_TOKEN).verify(request)


def test_blank_values_are_kept_in_the_signed_string() -> None:
    request = form([*twilio_fields(), ("ErrorCode", "")])
    fields = adapter().verify(request)
    assert fields["ErrorCode"] == ""
    assert adapter().parse(fields, request).error_code is None  # type: ignore[union-attr]


def test_whitespace_is_not_trimmed() -> None:
    request = form(twilio_fields(To=" +15005550006 "))
    assert adapter().verify(request)["To"] == " +15005550006 "


def test_parameters_twilio_adds_without_notice_are_signed_and_kept() -> None:
    request = form(twilio_fields(ChannelToAddress="+1500555", StructuredMessage="false"))
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and event.raw["StructuredMessage"] == "false"


def test_repeated_form_keys_keep_every_value() -> None:
    request = form([*twilio_fields(), ("Tag", "b"), ("Tag", "a")])
    assert adapter().verify(request)["Tag"] == ["b", "a"]


def test_raw_query_is_signed_as_received() -> None:
    url = URL + "?tenant=a%2Fb&x=1+2"
    assert adapter().verify(form(twilio_fields(), url=url))["MessageSid"]
    decoded = form(twilio_fields(), url=url)
    with pytest.raises(InvalidSignature):
        adapter().verify(inbound(URL + "?tenant=a/b&x=1+2", dict(decoded.headers), decoded.body))


def test_get_callback_signs_the_url_only() -> None:
    url = URL + "?" + urlencode(twilio_fields("sent"))
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, {})
    request = inbound(url, {"X-Twilio-Signature": signature}, method="GET")
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and event.status is Status.SENT


def json_request(data: dict[str, Any], body: bytes | None = None) -> Inbound:
    signed_body = orjson.dumps(data)
    url = f"{URL}?bodySHA256={hashlib.sha256(signed_body).hexdigest()}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, {})
    return inbound(url, {"X-Twilio-Signature": signature, "Content-Type": "application/json"},
                   signed_body if body is None else body)


def test_json_body_is_checked_against_body_sha256() -> None:
    data = dict(twilio_fields())
    fields = adapter().verify(json_request(data))
    assert fields["MessageSid"] == data["MessageSid"]
    tampered = orjson.dumps({**data, "MessageStatus": "failed"})
    with pytest.raises(InvalidSignature):
        adapter().verify(json_request(data, body=tampered))


def test_json_non_string_values_do_not_break_verification() -> None:
    fields = adapter().verify(json_request({**dict(twilio_fields()), "NumSegments": 2, "Price": None}))
    assert fields["NumSegments"] == "2"


def test_json_body_without_body_sha256_is_refused() -> None:
    headers = {"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(URL, {}),
               "Content-Type": "application/json"}
    with pytest.raises(InvalidSignature, match="bodySHA256"):
        adapter().verify(inbound(URL, headers, orjson.dumps(dict(twilio_fields()))))


def test_form_body_with_body_sha256_in_the_url_is_hash_checked() -> None:
    body = urlencode(twilio_fields()).encode()
    url = f"{URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, {})
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    assert adapter().verify(inbound(url, headers, body))["MessageStatus"] == "delivered"
    with pytest.raises(InvalidSignature):
        adapter().verify(inbound(url, headers, body.replace(b"delivered", b"failed")))


@pytest.mark.parametrize("body", [b"a=%ff%fe", b"MessageSid=\xff"], ids=["percent", "raw-bytes"])
def test_invalid_utf8_is_malformed(body: bytes) -> None:
    headers = {"X-Twilio-Signature": "x", "Content-Type": "application/x-www-form-urlencoded"}
    with pytest.raises(Malformed):
        adapter().verify(inbound(URL, headers, body))


# --- parse ----------------------------------------------------------------------------------------

SPEC_TABLE = {  # docs/events.md#statuses, Twilio column
    "accepted": "accepted", "scheduled": "scheduled", "queued": "queued", "sending": "sending", "sent": "sent",
    "delivered": "delivered", "partially_delivered": "partially_delivered", "undelivered": "undelivered",
    "failed": "failed", "canceled": "canceled", "read": "read", "something_new": "unknown",
}


@pytest.mark.parametrize(("word", "expected"), SPEC_TABLE.items())
def test_status_words_map_as_the_spec_says(word: str, expected: str) -> None:
    request = form(twilio_fields(word))
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None
    assert (event.status.value, event.provider_status) == (expected, word)
    assert set(STATUSES) | {"something_new"} == set(SPEC_TABLE)


def test_receiving_is_not_a_status() -> None:
    request = form(twilio_fields("receiving"))
    assert adapter().parse(adapter().verify(request), request) is None


# PROVIDERS-INBOUND.md §1.2/§1.4: a real capture's fields, with the vector's values.
INCOMING = [
    ("ToCountry", "US"), ("ToState", "CA"), ("SmsMessageSid", "SM00000000000000000000000000000001"),
    ("NumMedia", "0"), ("ToCity", "SAN FRANCISCO"), ("FromZip", "30512"),
    ("SmsSid", "SM00000000000000000000000000000001"), ("FromState", "GA"), ("SmsStatus", "received"),
    ("FromCity", "BLAIRSVILLE"), ("Body", "Hello & bye"), ("FromCountry", "US"), ("To", "+14155550100"),
    ("ToZip", "94105"), ("NumSegments", "1"), ("MessageSid", "SM00000000000000000000000000000001"),
    ("AccountSid", "AC00000000000000000000000000000001"), ("From", "+17065550101"), ("ApiVersion", "2010-04-01"),
]
INBOUND_URL = "https://gw.example.com/twilio/inbound"


def test_the_researched_incoming_message_vector_verifies_and_is_stored_as_inbound() -> None:
    body = urlencode(INCOMING).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "UEGBiAMmwp3Kcn13agncD7Mv/Jc="}
    request = inbound(INBOUND_URL, headers, body)
    twilio = adapter("12345")
    event = twilio.parse(twilio.verify(request), request)
    assert event is not None
    assert (event.status, event.direction, event.text, event.media) == (Status.RECEIVED, "inbound", "Hello & bye", ())
    assert (event.message_id, event.sender, event.to, event.channel) == (
        "SM00000000000000000000000000000001", "+17065550101", "+14155550100", "sms")
    assert event.raw["FromCity"] == "BLAIRSVILLE" and event.final
    tampered = inbound(INBOUND_URL, headers, body.replace(b"bye", b"BYE"))
    with pytest.raises(InvalidSignature):
        twilio.verify(tampered)
    as_get = inbound(INBOUND_URL + "?" + urlencode(INCOMING), {"X-Twilio-Signature": "nuzv7K5B8ba09JdzuPMKwhRXVaI="},
                     method="GET")
    got = twilio.parse(twilio.verify(as_get), as_get)
    assert got is not None and (got.id, got.text) == (event.id, "Hello & bye")  # the same message either way


def test_an_mms_keeps_its_media_in_order_and_whatsapp_its_profile() -> None:
    sid = "MM" + "b" * 32
    fields = [("MessageSid", sid), ("SmsStatus", "received"), ("AccountSid", ACCOUNT_SID), ("Body", ""),
              ("From", "whatsapp:+14155238886"), ("To", "whatsapp:+15005550006"), ("NumMedia", "2"),
              ("MediaUrl0", "https://api.twilio.com/m/ME0"), ("MediaContentType0", "image/jpeg"),
              ("MediaUrl1", "https://api.twilio.com/m/ME1"), ("MediaContentType1", "application/pdf"),
              ("ProfileName", "Ana"), ("WaId", "14155238886")]
    request = form(fields)
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None
    assert [(m.url, m.content_type) for m in event.media] == [
        ("https://api.twilio.com/m/ME0", "image/jpeg"), ("https://api.twilio.com/m/ME1", "application/pdf")]
    assert (event.text, event.channel, event.raw["ProfileName"], event.raw["WaId"]) == ("", "whatsapp", "Ana",
                                                                                       "14155238886")
    assert event.to_json()["media"][1] == {"url": "https://api.twilio.com/m/ME1", "content_type": "application/pdf"}


@pytest.mark.parametrize("fields", [[("NumMedia", "x")], [("NumMedia", "1")]], ids=["count", "missing-url"])
def test_an_incoming_message_with_broken_media_is_malformed(fields: list[tuple[str, str]]) -> None:
    request = form([*twilio_fields("received"), *fields])
    with pytest.raises(Malformed):
        adapter().parse(adapter().verify(request), request)


def replying(**reply: Any) -> Twilio:
    return Twilio("twilio-main", TwilioSettings(auth_token=[TWILIO_TOKEN], reply=reply))


def answer_to(twilio: Twilio, body: str, **extra: str) -> bytes | None:
    request = form([*twilio_fields("received"), ("Body", body), *extra.items()], url=URL + "?a=1")
    event = twilio.parse(twilio.verify(request), request)
    assert event is not None
    answered = twilio.answer(event, request)
    return answered[0] if answered else None


def test_a_reply_is_twiml_from_the_sdk_with_action_and_status_callback_on_this_endpoint() -> None:
    import xml.etree.ElementTree as ET

    twilio = replying(text="Got it <3 & thanks", keywords={"help": "Reply STOP to stop."})
    body = answer_to(twilio, "hello there")
    assert body is not None
    message = ET.fromstring(body).find("Message")
    assert message is not None and message.text == "Got it <3 & thanks"
    assert b"Got it &lt;3 &amp; thanks" in body  # escaped on the wire
    assert (message.get("action"), message.get("statusCallback"), message.get("method")) == (URL, URL, "POST")
    helped = answer_to(twilio, "  Help me please")  # the first word, in any case
    assert helped is not None and ET.fromstring(helped).findtext("Message") == "Reply STOP to stop."


@pytest.mark.parametrize("body", ["STOP", "stop", "Unsubscribe now", "optout", "REVOKE"])
def test_opt_out_words_get_no_reply_from_the_gateway(body: str) -> None:
    assert answer_to(replying(text="Thanks"), body) is None


def test_no_reply_without_reply_text_after_opt_out_handling_or_for_a_status() -> None:
    assert answer_to(replying(keywords={"HELP": "x"}), "hello") is None  # no default text
    assert answer_to(adapter(), "hello") is None  # no reply: configured
    assert answer_to(replying(text="Thanks"), "hello", OptOutType="STOP") is None  # Twilio answered it
    status = form(twilio_fields("delivered"))
    event = replying(text="Thanks").parse(adapter().verify(status), status)
    assert event is not None and replying(text="Thanks").answer(event, status) is None


@pytest.mark.parametrize("keywords", [{"STOP": "no"}, {"two words": "no"}, {" ": "no"}])
def test_a_keyword_must_be_one_word_and_not_an_opt_out_word(keywords: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        TwilioSettings(auth_token=[TWILIO_TOKEN], reply={"keywords": keywords})


def test_failure_fields_map_into_the_event() -> None:
    request = form(twilio_fields("undelivered", ErrorCode="30003", RawDlrDoneDate="2611231159"))
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None
    assert event.error_code == "30003"
    assert event.error_message == "Unreachable destination handset"
    assert event.occurred_at == "2026-11-23T11:59:00.000000Z"
    assert (event.account, event.to, event.sender, event.channel) == (
        ACCOUNT_SID, "+15005550006", "+15005550001", "sms")
    assert event.received_at == "2026-11-23T12:00:00.000000Z"


def test_whatsapp_channel_comes_from_the_address_prefix() -> None:
    request = form(twilio_fields("read", To="whatsapp:+15005550006", From="whatsapp:+14155238886"))
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and (event.channel, event.status) == ("whatsapp", Status.READ)


def test_missing_message_sid_is_malformed() -> None:
    request = form([("MessageStatus", "sent"), ("AccountSid", ACCOUNT_SID)])
    with pytest.raises(Malformed):
        adapter().parse(adapter().verify(request), request)


def test_legacy_sms_aliases_are_enough() -> None:
    request = form([("SmsSid", "SM" + "b" * 32), ("SmsStatus", "sent")])
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and event.message_id == "SM" + "b" * 32


def test_retry_maps_to_the_same_id_and_a_new_status_does_not() -> None:
    first, retry = form(twilio_fields("sent")), form(twilio_fields("sent"))
    later = form(twilio_fields("delivered"))
    ids = [adapter().parse(adapter().verify(r), r).id for r in (first, retry, later)]  # type: ignore[union-attr]
    assert ids[0] == ids[1] != ids[2]


class TestTwilioContract(ProviderContract):
    provider = Twilio
    settings: ClassVar[dict[str, Any]] = {"auth_token": TWILIO_TOKEN}
    words: ClassVar[dict[str, Status]] = {"delivered": Status.DELIVERED, "sent": Status.SENT,
                                          "undelivered": Status.UNDELIVERED}
    message_id = "SM" + "c" * 32

    tamper = (b"%2B1500", b"%2B1600")
    signature_header = "X-Twilio-Signature"

    def signed(self, word: str, message_id: str, secret: str | None = None) -> Request:
        headers, body = twilio_request(twilio_fields(word, sid=message_id), url=CONTRACT_URL,
                                       token=secret or TWILIO_TOKEN)
        return Request("POST", CONTRACT_URL, headers, body)
