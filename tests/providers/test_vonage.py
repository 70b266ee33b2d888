"""Vonage adapter: JWT HS256 + payload_hash, replay window, parse; tokens made with PyJWT and Vonage's claims."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import jwt
import orjson
import pytest
from vonage_jwt import verify_signature

from gateway.errors import InvalidToken, Malformed, Unsigned
from gateway.model import Media, Status, StatusEvent, Unread
from providers.base import Inbound
from providers.vonage import STATUSES, Vonage, VonageSettings
from tests.conftest import NOW as TEST_NOW
from tests.conftest import VONAGE_SECRET, vectors
from tests.providers.contract import URL as CONTRACT_URL
from tests.providers.contract import ProviderContract, Request
from tests.signing import vonage_claims, vonage_payload, vonage_request

URL = "https://gw.example.com/webhooks/vonage/main"
NOW = TEST_NOW


def adapter(*secrets: str, **options: Any) -> Vonage:
    return Vonage("vonage-main", VonageSettings(signature_secret=list(secrets) or [VONAGE_SECRET], **options))


def inbound(headers: dict[str, str], body: bytes, at: datetime = NOW) -> Inbound:
    return Inbound(method="POST", url=URL, headers={k.lower(): v for k, v in headers.items()},
                   body=body, received_at=at)


def signed(payload: dict[str, Any] | bytes | None = None, **kwargs: Any) -> Inbound:
    headers, body = vonage_request(vonage_payload() if payload is None else payload, **kwargs)
    return inbound(headers, body)


@pytest.mark.parametrize("vector", vectors("vonage", "messages-signed-webhook"), ids=lambda v: v["id"])
def test_shared_vectors(vector: dict[str, Any]) -> None:
    """The SDK's verdict on the signature, then the gateway's on the whole webhook (payload_hash included)."""
    try:
        sdk = verify_signature(vector["token"], vector["signature_secret"])
    except Exception:  # the SDK raises on a token that is not a JWT
        sdk = False
    assert sdk is vector["expected_valid"]
    body = vector.get("body", "{}").encode()
    claims = jwt.decode(vector["token"], options={"verify_signature": False}) if sdk else {}
    at = datetime.fromtimestamp(claims.get("iat", NOW.timestamp()) + 10, timezone.utc)
    request = inbound({"Authorization": f"Bearer {vector['token']}", "Content-Type": "application/json"}, body, at)
    gateway = adapter(vector["signature_secret"] if len(vector["signature_secret"]) >= 32 else "x" * 32)
    if vector.get("expected_payload_hash_match"):
        event = gateway.parse(gateway.verify(request), request)
        assert event is not None
        assert (event.message_id, event.status, event.account) == (
            "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", Status.DELIVERED, "a1b2c3d")
    else:
        # Generic tokens carry no payload_hash (or the wrong one) and are not webhooks: refused.
        with pytest.raises(InvalidToken):
            gateway.verify(request)


def test_valid_webhook_verifies_and_parses() -> None:
    request = signed()
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None
    assert event.to_json() | {"received_at": None, "id": None} == {
        "id": None, "provider": "vonage", "endpoint": "vonage-main",
        "message_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "status": "delivered",
        "provider_status": "delivered", "final": True, "error_code": None, "error_message": None,
        "to": "447700900000", "from": "447700900001", "channel": "sms", "account": "a1b2c3d",
        "occurred_at": "2020-01-01T14:00:00.000000Z", "received_at": None, "raw": vonage_payload(),
        "direction": "outbound", "text": None, "media": [], "reason": None,
    }


def test_rotation_accepts_every_configured_secret() -> None:
    other = "rotated_signature_secret_0123456789abcdef"
    assert adapter(VONAGE_SECRET, other).verify(signed(secret=other))
    with pytest.raises(InvalidToken, match="signature"):
        adapter(VONAGE_SECRET).verify(signed(secret=other))


def test_missing_token_asks_vonage_to_retry_signed() -> None:
    """docs/vonage.md, Messages API item 4: Vonage may send an unsigned callback and retries it signed after a 5xx."""
    body = orjson.dumps(vonage_payload())
    with pytest.raises(Unsigned) as caught:
        adapter().verify(inbound({"Content-Type": "application/json"}, body))
    assert caught.value.status == 503
    with pytest.raises(InvalidToken):
        adapter(unsigned="refuse").verify(inbound({"Content-Type": "application/json"}, body))


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes = b"") -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.{base64.urlsafe_b64encode(key).rstrip(b'=').decode()}"


BODY = orjson.dumps(vonage_payload())
REFUSALS: dict[str, dict[str, str]] = {
    "not-bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
    "empty-bearer": {"Authorization": "Bearer "},
    "not-a-jwt": {"Authorization": "Bearer asdf"},
    "alg-none": {"Authorization": "Bearer " + forge({"alg": "none", "typ": "JWT"}, vonage_claims(BODY))},
    "hs512": {"Authorization": "Bearer " + jwt.encode(vonage_claims(BODY), VONAGE_SECRET + "x" * 32, "HS512")},
    "wrong-secret": {"Authorization": "Bearer " + jwt.encode(vonage_claims(BODY), "w" * 40, "HS256")},
    "two-tokens": {"Authorization": "Bearer " + jwt.encode(vonage_claims(BODY), VONAGE_SECRET, "HS256") + ", Bearer x"},
}


@pytest.mark.parametrize("headers", REFUSALS.values(), ids=REFUSALS.keys())
def test_bad_tokens_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidToken):
        adapter().verify(inbound({"Content-Type": "application/json", **headers}, BODY))


CLAIM_REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "missing-iat": ({"iat": None}, "iat"),
    "string-iat": ({"iat": "1700000000"}, "iat"),
    "future-iat": ({"iat": int(NOW.timestamp()) + 3600}, "future"),
    "stale-iat": ({"iat": int(NOW.timestamp()) - 301}, "max_token_age"),
    "expired": ({"exp": int(NOW.timestamp()) - 1}, "expired"),
    "missing-payload-hash": ({"payload_hash": None}, "payload_hash"),
    "other-body-hash": ({"payload_hash": hashlib.sha256(b"{}").hexdigest()}, "payload_hash"),
    "other-issuer": ({"iss": "Mallory"}, "issued"),
}


@pytest.mark.parametrize(("claims", "reason"), CLAIM_REFUSALS.values(), ids=CLAIM_REFUSALS.keys())
def test_bad_claims_are_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        adapter().verify(signed(**claims))


def test_token_replayed_with_another_body_is_refused() -> None:
    original = signed()
    tampered = orjson.dumps(vonage_payload("rejected"))
    with pytest.raises(InvalidToken, match="payload_hash"):
        adapter().verify(inbound(dict(original.headers), tampered))


def test_replay_window_follows_received_at() -> None:
    request = signed(iat=int(NOW.timestamp()))  # the window is measured from the token's own iat
    assert adapter().verify(request)
    late = inbound(dict(request.headers), request.body, NOW + timedelta(seconds=301))
    with pytest.raises(InvalidToken, match="max_token_age"):
        adapter().verify(late)
    assert adapter(max_token_age=600).verify(late)


def test_small_clock_skew_is_tolerated() -> None:
    assert adapter().verify(signed(iat=int(NOW.timestamp()) + 30))


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b'"text"'], ids=["array", "garbage", "string"])
def test_signed_body_that_is_not_an_object_is_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        adapter().verify(signed(body))


SPEC_TABLE = {"submitted": "sent", "delivered": "delivered", "undeliverable": "undelivered",
              "rejected": "rejected", "read": "read", "something_new": "unknown"}


@pytest.mark.parametrize(("word", "expected"), SPEC_TABLE.items())
def test_status_words_map_as_the_spec_says(word: str, expected: str) -> None:
    request = signed(vonage_payload(word))
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and (event.status.value, event.provider_status) == (expected, word)
    assert set(STATUSES) | {"something_new"} == set(SPEC_TABLE)


@pytest.mark.parametrize("title", [1250, "1250"], ids=["number", "string"])
def test_error_title_may_be_a_number(title: int | str) -> None:
    payload = vonage_payload("rejected", error={"type": "https://developer.vonage.com/api-errors",
                                                "title": title, "detail": "Unroutable"})
    request = signed(payload)
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and (event.error_code, event.error_message) == ("1250", "Unroutable")


def test_unknown_fields_are_kept_in_raw() -> None:
    payload = vonage_payload("submitted", usage={"currency": "EUR", "price": "0.0333"},
                             destination={"network_code": "23410"}, brand_new={"x": [1, 2]})
    request = signed(payload)
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and event.raw["brand_new"] == {"x": [1, 2]}


def test_old_object_addresses_are_flattened() -> None:
    request = signed(vonage_payload(to={"type": "sms", "number": "447700900000"}))
    event = adapter().parse(adapter().verify(request), request)
    assert event is not None and event.to == "447700900000"


@pytest.mark.parametrize("payload", [{"status": "delivered"}, {"message_uuid": "x", "status": ""},
                                     {"message_uuid": 7, "status": "delivered"}],
                         ids=["no-uuid", "empty-status", "number-uuid"])
def test_missing_ids_are_malformed(payload: dict[str, Any]) -> None:
    request = signed(payload)
    with pytest.raises(Malformed):
        adapter().parse(adapter().verify(request), request)


class TestVonageContract(ProviderContract):
    provider = Vonage
    settings: ClassVar[dict[str, Any]] = {"signature_secret": VONAGE_SECRET}
    words: ClassVar[dict[str, Status]] = {"delivered": Status.DELIVERED, "submitted": Status.SENT,
                                          "rejected": Status.REJECTED}
    message_id = "cccccccc-bbbb-4ccc-8ddd-0123456789ab"

    tamper = (b"4477", b"4478")
    signature_header = "Authorization"

    def signed(self, word: str, message_id: str, secret: str | None = None) -> Request:
        headers, body = vonage_request(vonage_payload(word, uuid_=message_id), secret=secret or VONAGE_SECRET)
        return Request("POST", CONTRACT_URL, headers, body)


# --- inbound messages (PROVIDERS-INBOUND.md §2; shapes of the vendor's .NET and Java SDK fixtures) ----

INBOUND_SMS = {
    "channel": "sms", "message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", "to": "447700900000",
    "from": "447700900001", "timestamp": "2025-02-03T12:14:25Z", "message_type": "text", "text": "Hello, world!",
    "sms": {"num_messages": "2", "total_count": "2", "keyword": "HELLO"}, "usage": {"currency": "EUR", "price": "0.0333"},
    "origin": {"network_code": "12345"},
}
WHATSAPP = {"channel": "whatsapp", "message_uuid": "52afe398-e31a-4362-8c42-beb0c3b1d098", "to": "447700900000",
            "from": "447700900001", "timestamp": "2020-01-01T14:00:00.000Z", "profile": {"name": "Jane Smith"},
            "context_status": "none"}


def parsed(payload: dict[str, Any] | bytes) -> StatusEvent | Unread:
    request = signed(payload)
    result = adapter().parse(adapter().verify(request), request)
    assert isinstance(result, StatusEvent | Unread)
    return result


def test_the_researched_inbound_vector_verifies_and_becomes_an_inbound_event() -> None:
    """PROVIDERS-INBOUND.md §2.5: the raw body's SHA-256 is the token's payload_hash."""
    body = (b'{"channel":"sms","message_uuid":"aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab","to":"447700900000",'
            b'"from":"447700900001","timestamp":"2025-02-03T12:14:25Z","text":"Hello From Vonage!",'
            b'"sms":{"num_messages":"1"},"usage":{"currency":"EUR","price":"0.0057"},"message_type":"text"}')
    assert hashlib.sha256(body).hexdigest() == "9da091d985ed92e67adca2ca17c8bcd6562316ba279bed8d54cf6dc2edd65ec1"
    event = parsed(body)
    assert isinstance(event, StatusEvent)
    assert (event.status, event.direction, event.text, event.final) == (Status.RECEIVED, "inbound",
                                                                        "Hello From Vonage!", True)
    assert (event.message_id, event.to, event.sender, event.channel) == (
        "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", "447700900000", "447700900001", "sms")
    assert event.occurred_at == "2025-02-03T12:14:25.000000Z" and event.raw["usage"]["price"] == "0.0057"


def test_a_tampered_inbound_message_is_refused_like_a_status() -> None:
    headers, body = vonage_request(INBOUND_SMS)
    request = inbound(headers, body.replace(b"Hello, world!", b"Hello, WORLD!"))
    with pytest.raises(InvalidToken, match="payload_hash"):
        adapter().verify(request)


@pytest.mark.parametrize(("payload", "text", "media"), [
    (INBOUND_SMS, "Hello, world!", []),
    ({**INBOUND_SMS, "channel": "mms", "message_type": "image",
      "image": {"url": "https://example.com/image.jpg", "name": "image.jpg"}}, None,
     [Media("https://example.com/image.jpg", "image/jpeg")]),
    ({**INBOUND_SMS, "channel": "mms", "message_type": "vcard",
      "vcard": {"url": "https://example.com/contact.vcf", "name": "contact.vcf"}}, None,
     [Media("https://example.com/contact.vcf", "text/x-vcard")]),
    ({**INBOUND_SMS, "channel": "mms", "message_type": "content", "content": [
        {"type": "image", "url": "https://api-us.nexmo.com/v3/media/1111", "caption": "a"},
        {"type": "video", "url": "https://example.com/clip.mp4"}]}, None,
     [Media("https://api-us.nexmo.com/v3/media/1111", None), Media("https://example.com/clip.mp4", "video/mp4")]),
    ({**WHATSAPP, "message_type": "text", "text": "Hi <there> & bye"}, "Hi <there> & bye", []),
    ({**WHATSAPP, "message_type": "image",
      "image": {"url": "https://example.com/photo.png", "caption": "my receipt"}}, "my receipt",
     [Media("https://example.com/photo.png", "image/png")]),
    ({**WHATSAPP, "message_type": "reply", "reply": {"id": "row1", "title": "Yes please"}}, "Yes please", []),
    ({**WHATSAPP, "channel": "messenger", "to": "0123456789", "from": "9876543210", "message_type": "file",
      "file": {"url": "https://example.com/file.pdf"}}, None, [Media("https://example.com/file.pdf", "application/pdf")]),
], ids=["sms", "mms-image", "mms-vcard", "mms-content", "whatsapp-text", "whatsapp-image-caption",
        "whatsapp-reply", "messenger-file"])
def test_inbound_shapes_become_inbound_events(payload: dict[str, Any], text: str | None, media: list[Media]) -> None:
    event = parsed(payload)
    assert isinstance(event, StatusEvent)
    assert (event.status, event.direction, event.provider_status) == (Status.RECEIVED, "inbound", "received")
    assert (event.text, list(event.media), event.channel) == (text, media, payload["channel"])
    assert event.raw == payload  # WhatsApp's profile, usage, origin …: all kept


def test_the_older_nested_inbound_shape_and_viber_service_are_read() -> None:
    event = parsed({"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", "timestamp": "2020-01-01T14:00:00.000Z",
                    "to": {"type": "viber_service", "id": "447700900000"}, "from": {"type": "viber_service",
                                                                                     "id": "447700900001"},
                    "message": {"content": {"type": "text", "text": "old shape"}}})
    assert isinstance(event, StatusEvent)
    assert (event.text, event.channel, event.to, event.sender) == ("old shape", "viber", "447700900000",
                                                                    "447700900001")
    status = parsed({**vonage_payload("delivered"), "channel": "viber_service"})
    assert isinstance(status, StatusEvent) and status.channel == "viber"


@pytest.mark.parametrize(("payload", "kind"), [
    ({**WHATSAPP, "message_type": "location", "location": {"lat": 40.3, "long": -74.1}}, "message_type location"),
    ({**WHATSAPP, "message_type": "unsupported"}, "message_type unsupported"),
    ({**INBOUND_SMS, "channel": "instagram"}, "channel instagram"),
    ({**INBOUND_SMS, "message_type": "image", "image": {"name": "no-url.jpg"}}, "shape not read yet"),
    ({k: v for k, v in INBOUND_SMS.items() if k != "message_uuid"}, "without message_uuid"),
    ({"message_uuid": "x", "to": "447700900000", "timestamp": "2025-02-03T12:14:25Z"}, "neither status nor"),
], ids=["location", "unsupported", "new-channel", "image-without-url", "no-uuid", "new-kind"])
def test_genuine_callbacks_of_kinds_not_read_are_unread_not_refused(payload: dict[str, Any], kind: str) -> None:
    unread = parsed(payload)
    assert isinstance(unread, Unread)
    assert kind in unread.kind and unread.fields == payload


def test_sample_of_received_is_an_inbound_message_that_verifies() -> None:
    request = Vonage.sample_request(url=URL, signature_secret=VONAGE_SECRET, message_id="m-1", status="received",
                                    api_key="abcd1234", now=NOW)
    event = adapter().parse(adapter().verify(inbound(request.headers, request.body)), inbound(request.headers,
                                                                                              request.body))
    assert isinstance(event, StatusEvent)
    assert (event.direction, event.message_id, event.sender) == ("inbound", "m-1", "447700900000")
    assert event.text
