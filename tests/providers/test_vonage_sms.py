"""Vonage SMS API delivery receipts: `sig` by MD5 hash or HMAC, three transports, parse.

The HMAC signatures are made with Vonage's SDK (vonage-http-client's Auth).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from vonage_http_client import Auth

from gateway.errors import InvalidSignature, Malformed
from gateway.model import Fragment, Reason, Status, StatusEvent, Unread
from providers.base import Inbound
from providers.vonage_sms import VonageSMS, VonageSMSSettings
from tests.conftest import vectors
from tests.providers.contract import URL as CONTRACT_URL
from tests.providers.contract import ProviderContract, Request
from tests.signing import vonage_sms_receipt, vonage_sms_sig

URL = "https://gw.example.com/webhooks/vonage-sms/main"
SECRET = "vonage_sms_signature_secret_0123456789"
NOW = datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)
HMACS = ["md5", "sha1", "sha256", "sha512"]


def adapter(method: str = "sha256", *secrets: str) -> VonageSMS:
    return VonageSMS("vonage-sms-main", VonageSMSSettings(signature_secret=list(secrets) or [SECRET],
                                                          signature_method=method))  # type: ignore[arg-type]


def sdk_signed(fields: dict[str, Any], method: str = "sha256", secret: str = SECRET) -> dict[str, Any]:
    """Signed by Vonage's own SDK (vonage-http-client's Auth.sign_params, the HMAC methods)."""
    signed = dict(fields)
    signed["sig"] = Auth(api_key="abcd1234", signature_secret=secret, signature_method=method).sign_params(dict(fields))
    return signed


def as_get(fields: dict[str, Any]) -> Inbound:
    query = urlencode(fields)
    return Inbound(method="GET", url=f"{URL}?{query}", headers={}, body=b"", received_at=NOW, query=query)


def as_form(fields: dict[str, Any]) -> Inbound:
    return Inbound(method="POST", url=URL, headers={"content-type": "application/x-www-form-urlencoded"},
                   body=urlencode(fields).encode(), received_at=NOW)


def as_json(fields: dict[str, Any]) -> Inbound:
    return Inbound(method="POST", url=URL, headers={"content-type": "application/json"},
                   body=orjson.dumps(fields), received_at=NOW)


TRANSPORTS = [as_get, as_form, as_json]


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["get", "form", "json"])
@pytest.mark.parametrize("vector", [v for v in vectors("vonage", "sms-api-sig") if v["signature_secret"]],
                         ids=lambda v: v["id"])
def test_shared_vectors_in_every_transport(vector: dict[str, Any], transport: Any) -> None:
    gateway = adapter(vector["signature_method"], vector["signature_secret"])
    request = transport(vector["params"])
    if vector["expected_valid"]:
        fields = gateway.verify(request)
        assert "sig" not in fields
        assert set(fields) == set(vector["params"]) - {"sig"}
    else:
        with pytest.raises(InvalidSignature):
            gateway.verify(request)


def test_an_empty_secret_is_refused_by_the_config_not_accepted_as_a_key() -> None:
    (vector,) = [v for v in vectors("vonage", "sms-api-sig") if not v["signature_secret"]]
    with pytest.raises(ValidationError):
        VonageSMSSettings(signature_secret=vector["signature_secret"], signature_method=vector["signature_method"])


@pytest.mark.parametrize("method", HMACS)
@pytest.mark.parametrize("transport", TRANSPORTS, ids=["get", "form", "json"])
def test_sdk_signed_receipts_verify_and_a_changed_field_does_not(method: str, transport: Any) -> None:
    signed = sdk_signed(vonage_sms_receipt(), method)
    assert adapter(method).verify(transport(signed))["status"] == "delivered"
    with pytest.raises(InvalidSignature, match="sig does not match"):
        adapter(method).verify(transport({**signed, "status": "failed"}))
    with pytest.raises(InvalidSignature):
        adapter(method).verify(transport({**signed, "extra": "added"}))
    with pytest.raises(InvalidSignature):  # right signature, other method configured
        adapter("sha512" if method != "sha512" else "md5").verify(transport(signed))


def test_an_upper_case_sig_is_the_same_signature() -> None:
    signed = sdk_signed(vonage_sms_receipt())
    assert adapter().verify(as_json({**signed, "sig": signed["sig"].upper()}))


def test_every_configured_secret_is_tried() -> None:
    signed = sdk_signed(vonage_sms_receipt(), secret="the-old-secret")
    assert adapter("sha256", SECRET, "the-old-secret").verify(as_form(signed))


@given(st.dictionaries(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12),
                       st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24), max_size=8),
       st.sampled_from(HMACS))
def test_verdicts_match_the_sdk_on_any_fields(fields: dict[str, str], method: str) -> None:
    fields = {key: value for key, value in fields.items() if key != "sig"} | {"timestamp": "1795512598"}
    signed = sdk_signed(fields, method)
    assert adapter(method).verify(as_json(signed)) == fields
    tampered = {**signed, "timestamp": "1795512599"}
    assert Auth(api_key="k", signature_secret=SECRET, signature_method=method).check_signature(tampered) is False
    with pytest.raises(InvalidSignature):
        adapter(method).verify(as_json(tampered))


@pytest.mark.parametrize(("request_", "error", "match"), [
    (as_json(vonage_sms_receipt()), InvalidSignature, "no sig parameter"),
    (as_json({**vonage_sms_receipt(), "sig": ""}), InvalidSignature, "no sig parameter"),
    (Inbound(method="POST", url=URL, headers={"content-type": "application/json"}, body=b"[1]", received_at=NOW),
     Malformed, "must be an object"),
    (Inbound(method="POST", url=URL, headers={"content-type": "application/json"}, body=b"{", received_at=NOW),
     Malformed, "not valid JSON"),
    (as_json({**vonage_sms_receipt(), "nested": {"a": "b"}}), Malformed, "strings or numbers"),
    (Inbound(method="POST", url=URL, headers={"content-type": "application/x-www-form-urlencoded"},
             body=b"status=delivered&status=failed", received_at=NOW), Malformed, "a field is given twice"),
    (Inbound(method="POST", url=URL, headers={"content-type": "application/x-www-form-urlencoded"},
             body=b"status=%ff", received_at=NOW), Malformed, "percent-encoded"),
], ids=["unsigned", "empty-sig", "json-array", "json-broken", "json-nested", "repeated-field", "bad-encoding"])
def test_refusals(request_: Inbound, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        adapter().verify(request_)


def test_a_post_query_string_is_neither_signed_nor_read() -> None:
    signed = sdk_signed(vonage_sms_receipt())
    request = as_json(signed)
    with_query = Inbound(method="POST", url=URL + "?status=failed", headers=request.headers, body=request.body,
                         received_at=NOW, query="status=failed")
    assert adapter().verify(with_query)["status"] == "delivered"


# docs/events.md#statuses, column "Vonage SMS API".
SPEC_STATUSES = [("buffered", Status.SENDING), ("accepted", Status.SENT), ("delivered", Status.DELIVERED),
                 ("failed", Status.UNDELIVERED), ("rejected", Status.REJECTED), ("expired", Status.EXPIRED),
                 ("unknown", Status.UNKNOWN), ("deleted", Status.UNKNOWN)]


@pytest.mark.parametrize(("word", "status"), SPEC_STATUSES)
def test_statuses_follow_the_spec_table(word: str, status: Status) -> None:
    gateway = adapter()
    request = as_json(sdk_signed(vonage_sms_receipt(word)))
    event = gateway.parse(gateway.verify(request), request)
    assert event is not None
    assert (event.status, event.provider_status) == (status, word)


def test_a_receipt_becomes_the_normalized_event() -> None:
    gateway = adapter()
    request = as_form(sdk_signed(vonage_sms_receipt("failed", **{"err-code": "2", "client-ref": "order-17"})))
    event = gateway.parse(gateway.verify(request), request)
    assert event is not None
    assert (event.provider, event.endpoint, event.message_id, event.channel) == (
        "vonage", "vonage-sms-main", "0A0000001234567B", "sms")
    assert (event.error_code, event.error_message) == ("2", "Absent Subscriber - Temporary")
    assert event.reason == Reason("unreachable", False, "Absent Subscriber - Temporary")
    # The receipt's `msisdn` is the recipient and its `to` the sender id (docs/vonage.md).
    assert (event.to, event.sender, event.account) == ("447700900000", "AcmeInc", "abcd1234")
    assert event.occurred_at == "2026-11-24T09:29:00.000000Z"  # scts, YYMMDDhhmm read as UTC
    assert event.raw["client-ref"] == "order-17" and "sig" not in event.raw


def test_err_code_zero_is_no_error_and_message_timestamp_stands_in_for_a_bad_scts() -> None:
    gateway = adapter()
    request = as_json(sdk_signed(vonage_sms_receipt(scts="not-a-time")))
    event = gateway.parse(gateway.verify(request), request)
    assert event is not None
    assert (event.error_code, event.error_message) == (None, None)
    assert event.occurred_at == "2026-11-24T09:29:58.000000Z"


def test_the_same_receipt_resent_with_a_new_nonce_and_timestamp_has_the_same_id() -> None:
    gateway = adapter()
    first, again = (as_json(sdk_signed(vonage_sms_receipt(nonce=nonce, timestamp=ts))) for nonce, ts in
                    (("n-1", "1795512598"), ("n-2", "1795512658")))
    ids = {gateway.parse(gateway.verify(r), r).id for r in (first, again)}  # type: ignore[union-attr]
    assert len(ids) == 1


INBOUND = {"msisdn": "447700900001", "to": "447700900000", "messageId": "0B00000042AC53BD", "text": "hello",
           "type": "text", "keyword": "HELLO", "message-timestamp": "2026-11-24 09:29:58", "timestamp": "1795512598",
           "api-key": "abcd1234"}


def part(number: int, text: str, total: int = 3, ref: str = "1") -> dict[str, str]:
    return {**INBOUND, "messageId": f"0B0000004200000{number}", "text": text, "concat": "true", "concat-ref": ref,
            "concat-total": str(total), "concat-part": str(number)}


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["get", "form", "json"])
def test_an_inbound_sms_becomes_an_inbound_event_in_every_transport(transport: Any) -> None:
    gateway = adapter()
    request = transport(sdk_signed(INBOUND))
    event = gateway.parse(gateway.verify(request), request)
    assert isinstance(event, StatusEvent)
    assert (event.status, event.direction, event.text, event.channel) == (Status.RECEIVED, "inbound", "hello", "sms")
    # Inbound, `to` is the number that received it and msisdn the handset that sent it.
    assert (event.message_id, event.to, event.sender, event.account) == (
        "0B00000042AC53BD", "447700900000", "447700900001", "abcd1234")
    assert event.occurred_at == "2026-11-24T09:29:58.000000Z" and event.raw == INBOUND


def test_the_researched_part_vector_verifies_and_a_changed_part_number_does_not() -> None:
    """PROVIDERS-INBOUND.md §3.3: the concat fields are signed like the rest."""
    fields = {"api-key": "abcd1234", "msisdn": "447700900001", "to": "447700900000", "messageId": "0A0000000123ABCD1",
              "text": "Part two & = of the text", "type": "text", "keyword": "PART",
              "message-timestamp": "2020-01-01 12:00:00", "timestamp": "1577880000",
              "nonce": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", "concat": "true", "concat-ref": "1",
              "concat-total": "3", "concat-part": "2"}
    secret = "my_secret_key_for_testing"
    for method, sig in (("md5hash", "298abd3b8a409157c907717ba96ad2b7"),
                        ("sha256", "6804650AB8B3ABED9AED62F10D1D1BE51F64F85F8FBD95D5B005BD1BB08085C3")):
        gateway = adapter(method, secret)
        request = as_form({**fields, "sig": sig})
        fragment = gateway.parse(gateway.verify(request), request)
        assert isinstance(fragment, Fragment)
        assert (fragment.number, fragment.total) == (2, 3)
        with pytest.raises(InvalidSignature):
            gateway.verify(as_form({**fields, "concat-part": "3", "sig": sig}))


def test_parts_join_in_part_order_whatever_order_they_came_in() -> None:
    gateway = adapter()
    fragments = []
    for number, text in ((3, "end."), (1, "This is "), (2, "the middle, ")):
        request = as_json(sdk_signed(part(number, text)))
        fragment = gateway.parse(gateway.verify(request), request)
        assert isinstance(fragment, Fragment)
        fragments.append(fragment)
    assert len({f.group for f in fragments}) == 1
    other = gateway.parse(gateway.verify(as_json(sdk_signed(part(1, "x", ref="2")))), as_json(part(1, "x")))
    assert isinstance(other, Fragment) and other.group != fragments[0].group  # another message's parts
    event = gateway.join(sorted(fragments, key=lambda f: f.number))
    assert (event.text, event.message_id, event.direction) == ("This is the middle, end.", "0B00000042000001", "inbound")
    assert [p["concat-part"] for p in event.raw["parts"]] == ["1", "2", "3"]


@pytest.mark.parametrize("fields", [part(4, "x"), part(0, "x"), {**part(1, "x"), "concat-total": "many"},
                                    {**part(1, "x"), "concat-ref": ""}],
                         ids=["beyond-total", "zero", "bad-total", "no-ref"])
def test_a_part_without_a_place_is_kept_unread_not_refused(fields: dict[str, str]) -> None:
    gateway = adapter()
    request = as_json(sdk_signed(fields))
    unread = gateway.parse(gateway.verify(request), request)
    assert isinstance(unread, Unread) and "concat" in unread.kind and unread.fields == fields


def test_concat_as_a_json_true_is_a_part_too() -> None:
    gateway = adapter()
    request = as_json(sdk_signed({**part(2, "x"), "concat": True, "concat-part": 2, "concat-total": 3}))
    fragment = gateway.parse(gateway.verify(request), request)
    assert isinstance(fragment, Fragment) and (fragment.number, fragment.total, fragment.id) == (2, 3, "0B00000042000002")


def test_a_binary_sms_keeps_its_data_and_has_no_text() -> None:
    fields = {k: v for k, v in INBOUND.items() if k != "text"} | {"type": "binary", "data": "0a0b", "udh": "050003"}
    gateway = adapter()
    request = as_json(sdk_signed(fields))
    event = gateway.parse(gateway.verify(request), request)
    assert isinstance(event, StatusEvent) and event.text is None and event.raw["data"] == "0a0b"


def test_a_genuine_webhook_that_is_neither_is_unread() -> None:
    fields = {"msisdn": "447700900001", "to": "447700900000", "something": "new", "timestamp": "1795512598"}
    gateway = adapter()
    request = as_json(sdk_signed(fields))
    unread = gateway.parse(gateway.verify(request), request)
    assert isinstance(unread, Unread) and unread.fields == fields


def test_sample_of_received_is_a_signed_inbound_sms() -> None:
    request = VonageSMS.sample_request(url=URL, signature_secret=SECRET, signature_method="sha256", message_id="M1",
                                       status="received", api_key="abcd1234", now=NOW)
    inbound = as_json(orjson.loads(request.body))
    event = adapter().parse(adapter().verify(inbound), inbound)
    assert isinstance(event, StatusEvent) and (event.direction, event.message_id) == ("inbound", "M1")


def test_a_receipt_without_message_id_is_malformed() -> None:
    gateway = adapter()
    fields = vonage_sms_receipt()
    del fields["messageId"]
    request = as_json(sdk_signed(fields))
    with pytest.raises(Malformed, match="messageId and status"):
        gateway.parse(gateway.verify(request), request)


@pytest.mark.parametrize("method", ["md5hash", *HMACS])
def test_sample_requests_verify(method: str) -> None:
    gateway = adapter(method)
    sample = VonageSMS.sample_request(
        url=URL, signature_secret=SECRET, signature_method=method,  # type: ignore[arg-type]
        message_id="0A00000012345678", status="accepted", api_key="abcd1234", now=NOW)
    request = Inbound(method=sample.method, url=sample.url, headers={k.lower(): v for k, v in sample.headers.items()},
                      body=sample.body, received_at=NOW)
    event = gateway.parse(gateway.verify(request), request)
    assert event is not None and event.status is Status.SENT
    if method != "md5hash":  # the SDK speaks the HMAC methods only (docs/vonage.md)
        assert Auth(api_key="k", signature_secret=SECRET, signature_method=method).check_signature(
            orjson.loads(sample.body))


@pytest.mark.parametrize("vector", [v for v in vectors("vonage", "sms-api-sig/md5hash") if v["signature_secret"]],
                         ids=lambda v: v["id"])
def test_the_tests_own_md5hash_agrees_with_the_vectors(vector: dict[str, Any]) -> None:
    fields = {key: str(value) for key, value in vector["params"].items() if key != "sig"}
    assert (vonage_sms_sig(fields, vector["signature_secret"]) == vector["params"]["sig"]) is vector["expected_valid"]


class TestVonageSMSContract(ProviderContract):
    provider = VonageSMS
    settings: ClassVar[dict[str, Any]] = {"signature_secret": SECRET, "signature_method": "sha256"}
    words: ClassVar[dict[str, Status]] = {"delivered": Status.DELIVERED, "accepted": Status.SENT,
                                          "failed": Status.UNDELIVERED, "expired": Status.EXPIRED}
    message_id = "0C00000012345678"

    tamper = (b"4477", b"4478")
    signature_header = ""  # the signature is the `sig` field

    def signed(self, word: str, message_id: str, secret: str | None = None) -> Request:
        fields = sdk_signed(vonage_sms_receipt(word, messageId=message_id), secret=secret or SECRET)
        return Request("POST", CONTRACT_URL, {"Content-Type": "application/json"}, orjson.dumps(fields))

    def unsigned(self, request: Request) -> Request:
        fields = orjson.loads(request.body)
        del fields["sig"]
        return Request(request.method, request.url, request.headers, orjson.dumps(fields))
