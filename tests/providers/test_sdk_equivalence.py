"""The fast checks on the callback path give the SDKs' answers (hypothesis, many random cases).

providers/twilio.py builds RequestValidator's string-to-sign itself for form POSTs, and
providers/vonage.py verifies HS256 with PyJWT's HMAC algorithm rather than jwt.decode; both for
speed (docs/benchmarks.md). Here the SDKs are the oracle: same inputs, same verdict, same fields.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator

from gateway.errors import InvalidSignature, InvalidToken, Malformed
from providers.base import Inbound
from providers.decoding import decode_pairs
from providers.twilio import Twilio, TwilioSettings
from providers.vonage import Vonage, VonageSettings
from tests.conftest import NOW as TEST_NOW

TOKEN = "equivalence_auth_token_0123456789abcdef"
SECRET = "equivalence_signature_secret_0123456789abcdef"
NOW = TEST_NOW
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: the profile's

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
pairs = st.lists(st.tuples(text, text), max_size=8)
urls = st.sampled_from([
    "https://gw.example.com/webhooks/twilio/main", "https://gw.example.com:443/webhooks/twilio/main",
    "http://10.0.0.7:8000/webhooks/twilio/main", "https://gw.example.com/webhooks/twilio/main?a=1&b=%20",
])


@FAST
@given(st.binary(max_size=60) | st.text(max_size=40).map(lambda t: quote(t, safe="=&+%").encode()))
def test_form_parsing_matches_parse_qsl(body: bytes) -> None:
    try:
        expected: Any = parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        expected = Malformed
    try:
        got: Any = decode_pairs(body, "form body")
    except Malformed:
        got = Malformed
    assert got == expected


def twilio_inbound(url: str, body: bytes, signature: str) -> Inbound:
    return Inbound(method="POST", url=url, body=body, received_at=NOW, query=url.partition("?")[2], headers={
        "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature})


def twilio_verdict(url: str, body: bytes, signature: str) -> bool:
    try:
        Twilio("t", TwilioSettings(auth_token=(TOKEN,))).verify(twilio_inbound(url, body, signature))
    except InvalidSignature:
        return False
    return True


@FAST
@given(urls, pairs, urls, st.booleans())
def test_twilio_form_verdicts_match_request_validator(url: str, fields: list[tuple[str, str]], signed_url: str,
                                                     tamper: bool) -> None:
    validator = RequestValidator(TOKEN)
    params = ImmutableMultiDict(fields)
    signature = validator.compute_signature(signed_url, params)
    if tamper:
        signature = signature[:-2] + ("AA" if not signature.endswith("AA=") else "BB") + signature[-1:]
    body = urlencode(fields).encode()
    assert twilio_verdict(url, body, signature) == validator.validate(url, params, signature)


claims = st.fixed_dictionaries(
    {"iat": st.integers(NOW.timestamp().__int__() - 100, NOW.timestamp().__int__())},
    optional={"jti": text, "api_key": text, "application_id": text, "iss": st.just("Vonage"),
              "extra": st.one_of(st.integers(), text, st.lists(st.integers(), max_size=3))},
)


def vonage_verdict(token: str, body: bytes) -> Any:
    inbound = Inbound(method="POST", url="https://gw.example.com/v", body=body, received_at=NOW,
                      headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    try:
        return Vonage("v", VonageSettings(signature_secret=(SECRET,))).verify(inbound)["api_key"]
    except InvalidToken:
        return InvalidToken


@FAST
@given(claims, st.sampled_from([SECRET, "another_secret_0123456789abcdef0123"]),
       st.sampled_from(["none", "header", "payload", "signature"]), st.integers(0, 200))
def test_vonage_token_verdicts_match_jwt_decode(values: dict[str, Any], secret: str, tamper: str, where: int) -> None:
    body = b'{"message_uuid":"m","status":"delivered"}'
    token = jwt.encode({**values, "payload_hash": hashlib.sha256(body).hexdigest()}, secret, algorithm="HS256")
    if tamper != "none":
        parts = token.split(".")
        part = parts[["header", "payload", "signature"].index(tamper)]
        index = where % len(part)
        flipped = part[:index] + ("A" if part[index] != "A" else "B") + part[index + 1:]
        parts[["header", "payload", "signature"].index(tamper)] = flipped
        token = ".".join(parts)
    try:
        decoded = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_iat": False})
        expected: Any = decoded.get("api_key") if isinstance(decoded.get("api_key"), str) else None
    except jwt.PyJWTError:
        expected = InvalidToken
    assert vonage_verdict(token, body) == expected


def test_a_second_spelling_of_a_signed_token_is_refused_like_jwt_decode() -> None:
    """Found by the long campaign: the last character of a segment has bits no decoder reads."""
    body = b"{}"
    token = jwt.encode({"iat": int(NOW.timestamp()), "payload_hash": hashlib.sha256(body).hexdigest()},
                       SECRET, algorithm="HS256")
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(last) ^ 1]  # same 4 leading bits, other unused bits
    respelled = token[:-1] + sibling
    with pytest.raises(jwt.DecodeError):
        jwt.decode(respelled, SECRET, algorithms=["HS256"])
    assert vonage_verdict(token, body) is None  # no api_key claim, but valid
    assert vonage_verdict(respelled, body) is InvalidToken


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_refused_like_jwt_decode_with_hs256_only(algorithm: str) -> None:
    body, long_secret = b"{}", SECRET * 2  # long enough for HS512 without PyJWT's key-length warning
    token = jwt.encode({"iat": int(NOW.timestamp()), "payload_hash": hashlib.sha256(body).hexdigest()},
                       long_secret, algorithm=algorithm)
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, long_secret, algorithms=["HS256"])
    assert vonage_verdict(token, body) is InvalidToken
