"""Hostile input: every row a request and its exact answer (README, HTTP); nothing refused is stored.

Then fuzzing of the whole app through its ASGI interface (no 500, only documented refusals, no
stored forgery), and the secrets that must never show in a log line or a refusal, at every level.
The long fuzzing campaign is the same test with HYPOTHESIS_PROFILE=campaign (README, Security).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from gateway.app import create_app
from gateway.config import Config
from gateway.logs import configure_logging
from tests.conftest import NOW as TEST_NOW
from tests.conftest import PUBLIC_URL, clock, TWILIO_TOKEN, VONAGE_SECRET, VONAGE_SMS_SECRET
from tests.signing import (
    TWILIO_PATH,
    VONAGE_PATH,
    VONAGE_SMS_PATH,
    twilio_fields,
    twilio_request,
    vonage_claims,
    vonage_payload,
    vonage_request,
    vonage_sms_receipt,
    vonage_sms_sig,
)

LIMIT = 65536  # server.max_body_bytes in the test config
REFUSAL_CODES = {400: "malformed", 401: "invalid_token", 403: "invalid_signature", 404: "not_found",
                 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}
Row = tuple[dict[str, Any], int, str]


def stored(tmp_path: Path) -> int:
    return int(sqlite3.connect(tmp_path / "gateway.db").execute("SELECT count(*) FROM events").fetchone()[0])


def twilio(pairs: list[tuple[str, str]] | None = None, *, url: str = TWILIO_PATH, body: bytes | None = None,
           signed_url: str = PUBLIC_URL + TWILIO_PATH, token: str = TWILIO_TOKEN,
           headers: dict[str, str] | None = None, method: str = "POST") -> dict[str, Any]:
    signed_headers, signed_body = twilio_request(pairs or twilio_fields(), url=signed_url, token=token)
    return {"method": method, "url": url, "headers": {**signed_headers, **(headers or {})},
            "content": signed_body if body is None else body}


def vonage(payload: dict[str, Any] | bytes | None = None, *, body: bytes | None = None,
           headers: dict[str, str] | None = None, token: str | None = None, **claims: Any) -> dict[str, Any]:
    signed_headers, signed_body = vonage_request(vonage_payload() if payload is None else payload, **claims)
    if token is not None:
        signed_headers["Authorization"] = f"Bearer {token}"
    return {"method": "POST", "url": VONAGE_PATH, "headers": {**signed_headers, **(headers or {})},
            "content": signed_body if body is None else body}


def unsigned_jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join((part(orjson.dumps(header)), part(orjson.dumps(claims)), part(signature)))


def rs256_token(body: bytes) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(vonage_claims(body), key, algorithm="RS256")


def confused_token(body: bytes) -> str:
    """RS256 → HS256 key confusion: HMAC keyed with a public key, for a server that would use one."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = vonage_claims(body)
    signing_input = unsigned_jwt({"alg": "HS256", "typ": "JWT"}, claims).rsplit(".", 1)[0]
    import hmac

    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


BODY = orjson.dumps(vonage_payload())
SMS_RECEIPT = vonage_sms_receipt()
SMS_RECEIPT["sig"] = vonage_sms_sig(SMS_RECEIPT)
NOW = int(TEST_NOW.timestamp())


def pairs_with(**changes: str | None) -> list[tuple[str, str]]:
    fields = dict(twilio_fields())
    for key, value in changes.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    return list(fields.items())


def signed_then(change: Callable[[list[tuple[str, str]]], list[tuple[str, str]]]) -> dict[str, Any]:
    """A request signed over the real fields whose body then says something else."""
    return twilio(body=urlencode(change(twilio_fields())).encode())


MATRIX: dict[str, Row] = {
    # --- Twilio signature header
    "twilio-signature-missing": (twilio(headers={"X-Twilio-Signature": ""}), 403, "invalid_signature"),
    "twilio-signature-garbage": (twilio(headers={"X-Twilio-Signature": "not base64 at all"}), 403, "invalid_signature"),
    "twilio-signature-overlong": (twilio(headers={"X-Twilio-Signature": "A" * 8000}), 403, "invalid_signature"),
    "twilio-signed-for-another-endpoint": (twilio(signed_url=PUBLIC_URL + "/webhooks/twilio/other"), 403,
                                           "invalid_signature"),
    "twilio-signed-for-another-host": (twilio(signed_url="https://evil.example.com" + TWILIO_PATH), 403,
                                       "invalid_signature"),
    "twilio-signed-by-another-account": (twilio(token="another-accounts-auth-token-0123456"), 403,
                                         "invalid_signature"),
    "twilio-query-added-after-signing": (twilio(url=TWILIO_PATH + "?MessageStatus=delivered"), 403,
                                         "invalid_signature"),
    # --- Twilio fields
    "twilio-tampered-status": (signed_then(lambda f: [(k, "failed" if k == "MessageStatus" else v) for k, v in f]),
                               403, "invalid_signature"),
    "twilio-added-field": (signed_then(lambda f: [*f, ("ErrorCode", "30003")]), 403, "invalid_signature"),
    "twilio-removed-field": (signed_then(lambda f: [p for p in f if p[0] != "To"]), 403, "invalid_signature"),
    "twilio-repeated-key-added": (signed_then(lambda f: [*f, ("MessageStatus", "failed")]), 403,
                                  "invalid_signature"),
    "twilio-signed-but-no-status": (twilio(pairs_with(MessageStatus=None, SmsStatus=None)), 400, "malformed"),
    "twilio-invalid-utf8-percent": (twilio(body=b"MessageSid=%ff%fe&MessageStatus=sent"), 400, "malformed"),
    "twilio-invalid-utf8-raw": (twilio(body=b"MessageSid=\xc3\x28"), 400, "malformed"),
    "twilio-invalid-percent": (twilio(body=b"MessageSid=%zz&MessageStatus=%"), 403, "invalid_signature"),
    # --- Twilio media types and sizes
    "twilio-text-plain": (twilio(headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    "twilio-multipart": (twilio(headers={"Content-Type": "multipart/form-data; boundary=x"}), 415,
                         "unsupported_media_type"),
    "twilio-no-content-type": (twilio(headers={"Content-Type": ""}), 415, "unsupported_media_type"),
    "twilio-charset-latin1": (twilio(headers={"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"}),
                              415, "unsupported_media_type"),
    "twilio-empty-body": (twilio(body=b""), 403, "invalid_signature"),
    "twilio-one-byte": (twilio(body=b"a"), 403, "invalid_signature"),
    "twilio-one-byte-over": (twilio(body=b"a=" + b"x" * (LIMIT - 1)), 413, "too_large"),
    "twilio-content-length-lies-high": (twilio(headers={"Content-Length": str(LIMIT + 1)}), 413, "too_large"),
    "twilio-content-length-not-a-number": (twilio(headers={"Content-Length": "12abc"}), 400, "malformed"),
    "twilio-json-without-body-hash": (twilio(body=b'{"MessageStatus":"sent"}',
                                             headers={"Content-Type": "application/json"}), 403, "invalid_signature"),
    "twilio-delete": (twilio(method="DELETE"), 405, "method_not_allowed"),
    # --- Vonage tokens
    "vonage-alg-none": (vonage(token=unsigned_jwt({"alg": "none", "typ": "JWT"}, vonage_claims(BODY))), 401,
                        "invalid_token"),
    "vonage-alg-none-signed-anyway": (vonage(token=unsigned_jwt({"alg": "none"}, vonage_claims(BODY), b"x" * 32)),
                                      401, "invalid_token"),
    "vonage-hs512": (vonage(secret=VONAGE_SECRET * 2, algorithm="HS512"), 401, "invalid_token"),
    "vonage-rs256": (vonage(token=rs256_token(BODY)), 401, "invalid_token"),
    "vonage-rs256-key-confusion": (vonage(token=confused_token(BODY)), 401, "invalid_token"),
    "vonage-other-secret": (vonage(secret="someone-elses-signature-secret-0123456789"), 401, "invalid_token"),
    "vonage-no-iat": (vonage(iat=None), 401, "invalid_token"),
    "vonage-iat-not-a-number": (vonage(iat="yesterday"), 401, "invalid_token"),
    "vonage-iat-bool": (vonage(iat=True), 401, "invalid_token"),
    "vonage-iat-in-the-future": (vonage(iat=NOW + 3600), 401, "invalid_token"),
    "vonage-iat-too-old": (vonage(iat=NOW - 3600), 401, "invalid_token"),
    "vonage-expired": (vonage(exp=NOW - 10), 401, "invalid_token"),
    "vonage-issuer-not-vonage": (vonage(iss="someone"), 401, "invalid_token"),
    "vonage-no-payload-hash": (vonage(payload_hash=None), 401, "invalid_token"),
    "vonage-payload-hash-of-another-body": (vonage(payload_hash=hashlib.sha256(b"{}").hexdigest()), 401,
                                            "invalid_token"),
    "vonage-token-replayed-with-another-body": (vonage(body=orjson.dumps(vonage_payload("rejected"))), 401,
                                                "invalid_token"),
    "vonage-not-bearer": (vonage(headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "invalid_token"),
    "vonage-two-tokens": (vonage(headers={"Authorization": "Bearer a.b.c, Bearer d.e.f"}), 401, "invalid_token"),
    "vonage-overlong-token": (vonage(token="a" * 6000 + "." + "b" * 6000 + "." + "c" * 100), 401, "invalid_token"),
    "vonage-no-authorization": (vonage(headers={"Authorization": ""}), 503, "unsigned_callback"),
    # --- Vonage bodies, signed: the JWT is fine, the JSON is not
    "vonage-json-array": (vonage(b"[1, 2]"), 400, "malformed"),
    "vonage-json-string": (vonage(b'"delivered"'), 400, "malformed"),
    "vonage-json-invalid": (vonage(b'{"message_uuid": '), 400, "malformed"),
    "vonage-json-deep": (vonage(b"[" * 5000 + b"]" * 5000), 400, "malformed"),
    "vonage-json-infinite-number": (vonage(b'{"message_uuid": "m", "status": "sent", "n": 1e999}'), 400, "malformed"),
    "vonage-empty-body": (vonage(b""), 400, "malformed"),
    "vonage-status-not-a-string": (vonage(vonage_payload(status=4)), 400, "malformed"),
    "vonage-form-body": (vonage(headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
                         "unsupported_media_type"),
    "vonage-charset-utf16": (vonage(headers={"Content-Type": "application/json; charset=utf-16"}), 415,
                             "unsupported_media_type"),
    # --- paths
    "trailing-slash": (twilio(url=TWILIO_PATH + "/"), 404, "not_found"),
}


@pytest.mark.parametrize(("request_", "status", "code"), MATRIX.values(), ids=MATRIX.keys())
def test_hostile_request_gets_its_exact_refusal_and_nothing_is_stored(
        client: TestClient, tmp_path: Path, request_: dict[str, Any], status: int, code: str) -> None:
    answer = client.request(**request_)
    assert (answer.status_code, answer.json()["error"]) == (status, code)
    assert stored(tmp_path) == 0


ACCEPTED: dict[str, dict[str, Any]] = {
    # What looks odd but is the providers' protocol: answered 200 and stored.
    "twilio-fields-reordered": twilio(body=urlencode(twilio_fields()[::-1]).encode()),
    "twilio-charset-quoted-upper": twilio(headers={"Content-Type": 'application/x-www-form-urlencoded; charset="UTF-8"'}),
    "twilio-chunked-without-length": {**twilio(), "content": iter([twilio()["content"][:10], twilio()["content"][10:]])},
    "vonage-duplicate-keys-last-wins": vonage(b'{"message_uuid": "m-dup", "status": "rejected", "status": "delivered"}'),
    "vonage-huge-number-kept": vonage(orjson.dumps(vonage_payload()).replace(b"}", b', "price": 1' + b"0" * 40 + b"}")),
    "vonage-nested-extra-kept": vonage(orjson.dumps(vonage_payload(extra={"a": [[[[{"b": None}]]]]}))),
    "vonage-iat-within-skew": vonage(iat=NOW + 30),
}


@pytest.mark.parametrize("request_", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_odd_but_genuine_callbacks_are_stored_once(client: TestClient, tmp_path: Path, request_: dict[str, Any]) -> None:
    answer = client.request(**request_)
    assert answer.status_code == 200, answer.text
    assert stored(tmp_path) == 1


def test_duplicate_json_keys_are_read_as_the_signer_last_wrote_them(client: TestClient, tmp_path: Path) -> None:
    assert client.request(**ACCEPTED["vonage-duplicate-keys-last-wins"]).status_code == 200
    row = sqlite3.connect(tmp_path / "gateway.db").execute("SELECT status FROM events").fetchone()
    assert row == ("delivered",)


def test_a_signature_header_sent_twice_is_refused(client: TestClient, tmp_path: Path) -> None:
    request_ = twilio()
    valid = request_["headers"].pop("X-Twilio-Signature")
    headers = [*request_["headers"].items(), ("X-Twilio-Signature", valid), ("X-Twilio-Signature", valid)]
    answer = client.post(TWILIO_PATH, headers=headers, content=request_["content"])
    assert (answer.status_code, answer.json()["error"]) == (403, "invalid_signature")
    assert stored(tmp_path) == 0


# --- fuzzing the whole app through ASGI ------------------------------------------------------------

class ASGIApp:
    """The app driven directly through its ASGI interface: thousands of requests a second."""

    def __init__(self, config: Config) -> None:
        self.app = create_app(config, clock=clock)

    def __enter__(self) -> ASGIApp:
        self._stack = TestClient(self.app, base_url=PUBLIC_URL).__enter__()  # runs the lifespan (opens sinks)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(None, None, None)

    def request(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
        return self._stack.portal.call(self._call, method, path, headers, body)  # type: ignore[union-attr]

    async def _call(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
        path_part, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "https", "path": path_part, "raw_path": path_part.encode("latin-1", "replace"),
                 "query_string": query.encode("latin-1", "replace"), "root_path": "", "headers": headers,
                 "client": ("203.0.113.9", 40000), "server": ("gw.example.com", 443)}
        sent = False
        answer: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            else:
                answer["body"] = answer.get("body", b"") + message.get("body", b"")

        await self.app(scope, receive, send)
        return answer["status"], answer.get("body", b"")


@pytest.fixture
def asgi(make_config: Callable[..., Config]) -> Iterator[ASGIApp]:
    with ASGIApp(make_config()) as app:
        yield app


@pytest.mark.parametrize("path", ["/webhooks/twilio/../twilio/main", "/webhooks/twilio/./main",
                                  "/webhooks//twilio/main", "/WEBHOOKS/twilio/main"])
def test_a_path_that_only_resolves_to_an_endpoint_is_not_one(asgi: ASGIApp, tmp_path: Path, path: str) -> None:
    """The signed URL is the path as sent; an HTTP client would normalize these, a raw request does not."""
    request_ = twilio(signed_url=PUBLIC_URL + path)
    headers = [(k.lower().encode(), v.encode()) for k, v in request_["headers"].items()]
    status, answer = asgi.request("POST", path, headers, request_["content"])
    assert (status, json.loads(answer)["error"]) == (404, "not_found")
    assert stored(tmp_path) == 0


header_names = st.sampled_from([b"content-type", b"x-twilio-signature", b"authorization", b"content-length",
                                b"host", b"x-forwarded-proto", b"x-twilio-webhooks-signature-settings", b"x-other"])
header_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"application/x-www-form-urlencoded", b"application/json", b"application/json; charset=utf-8",
                     b"Bearer " + vonage()["headers"]["Authorization"][7:].encode(), b"Bearer a.b.c",
                     b"key=k,algorithm=HMAC_SHA256", b"0", b"99999999999"]),
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.just(twilio()["content"]), st.just(BODY),
    st.just(orjson.dumps(SMS_RECEIPT)), st.just(urlencode(SMS_RECEIPT).encode()),
    st.lists(st.tuples(st.sampled_from(["MessageSid", "MessageStatus", "AccountSid", "ErrorCode", "x"]),
                       st.text(max_size=20)), max_size=6).map(lambda p: urlencode(p).encode()),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                 max_leaves=10).map(lambda v: json.dumps(v).encode()),
)


@given(method=st.sampled_from(["POST", "GET", "PUT", "HEAD", "OPTIONS"]),
       path=st.sampled_from([TWILIO_PATH, VONAGE_PATH, TWILIO_PATH + "?bodySHA256=abc", TWILIO_PATH + "?MessageSid=x",
                             VONAGE_SMS_PATH, VONAGE_SMS_PATH + "?" + urlencode(SMS_RECEIPT),
                             "/healthz", "/readyz", "/v1/events", "/v1/messages/twilio/x", "/nope", TWILIO_PATH + "/"]),
       headers=st.lists(st.tuples(header_names, header_values), max_size=6),
       body=bodies)
def test_fuzzed_requests_never_get_a_500_or_store_a_forgery(
        asgi: ASGIApp, tmp_path: Path, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    status, answer = asgi.request(method, path, headers, body)
    assert status < 500 or status == 503
    if path.startswith("/webhooks") and status != 200:
        assert json.loads(answer)["error"] in {*REFUSAL_CODES.values(), "unsigned_callback"}
        assert REFUSAL_CODES.get(status, "unsigned_callback") == json.loads(answer)["error"]
    # Only the untouched signed bodies can ever be stored, and only with their own valid signature
    # (the SMS receipt is one event in three forms: JSON, form, query).
    assert stored(tmp_path) <= 3


# --- secrets never logged, whatever the level ---------------------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_token_or_signature_reaches_a_log_line_or_a_refusal(
        make_config: Callable[..., Config], capfd: pytest.CaptureFixture[str], fmt: str) -> None:
    configure_logging("debug", fmt)
    try:
        logging.getLogger("gateway.test").debug("debug is on")
        forged_token = jwt.encode(vonage_claims(BODY), "forger-secret-0123456789abcdef0123", algorithm="HS256")
        good, forged = vonage(), vonage(token=forged_token)
        twilio_good, twilio_forged = twilio(), twilio(token="forger-auth-token-0123456789")
        sms_forged = {**SMS_RECEIPT, "sig": vonage_sms_sig(SMS_RECEIPT, "forger-sms-secret-0123456789")}
        sms_good, sms_bad = ({"method": "POST", "url": VONAGE_SMS_PATH, "json": r} for r in (SMS_RECEIPT, sms_forged))
        with TestClient(create_app(make_config(log_level="debug", log_format=fmt), clock=clock), base_url=PUBLIC_URL) as client:
            answers = [client.request(**r) for r in (good, forged, twilio_good, twilio_forged, sms_good, sms_bad)]
        assert [a.status_code for a in answers] == [200, 401, 200, 403, 200, 403]
        logging.getLogger("gateway").handlers[0].flush()
        out, err = capfd.readouterr()
        text = out + err + "".join(a.text for a in answers)
        assert "debug is on" in text and "invalid_token" in text and "invalid_signature" in text
        secrets = [TWILIO_TOKEN, VONAGE_SECRET, "forger-secret-0123456789abcdef0123", "forger-auth-token-0123456789",
                   good["headers"]["Authorization"][7:], forged_token,
                   twilio_good["headers"]["X-Twilio-Signature"], twilio_forged["headers"]["X-Twilio-Signature"],
                   RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + TWILIO_PATH, {}),
                   VONAGE_SMS_SECRET, "forger-sms-secret-0123456789", SMS_RECEIPT["sig"], sms_forged["sig"]]
        for secret in secrets:
            assert secret not in text
    finally:
        for name in ("gateway", "uvicorn", "uvicorn.error"):
            logging.getLogger(name).handlers = []
            logging.getLogger(name).propagate = True
