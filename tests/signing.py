"""Test requests signed the way the providers sign them: Twilio's RequestValidator, PyJWT with Vonage's claims,
and the SMS API's md5hash `sig` (which Vonage's current SDK cannot make: docs/vonage.md)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson
from twilio.request_validator import RequestValidator

from tests.conftest import NOW, PUBLIC_URL, TWILIO_TOKEN, VONAGE_SECRET, VONAGE_SMS_SECRET

TWILIO_PATH = "/webhooks/twilio/main"
VONAGE_PATH = "/webhooks/vonage/main"
VONAGE_SMS_PATH = "/webhooks/vonage-sms/main"
ACCOUNT_SID = "AC" + "0" * 31 + "1"


def twilio_fields(status: str = "delivered", sid: str = "SM" + "a" * 32, **extra: str) -> list[tuple[str, str]]:
    fields = {
        "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsSid": sid,
        "MessageStatus": status, "SmsStatus": status, "From": "+15005550001", "To": "+15005550006",
    }
    fields.update(extra)
    return list(fields.items())


def twilio_request(
    pairs: list[tuple[str, str]], *, token: str = TWILIO_TOKEN, url: str = PUBLIC_URL + TWILIO_PATH,
    algorithm: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a form POST signed by the SDK over a multi-value view of the pairs."""
    from starlette.datastructures import ImmutableMultiDict

    signature = RequestValidator(token).compute_signature(url, ImmutableMultiDict(pairs), algorithm)
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "X-Twilio-Signature": signature}
    return headers, urlencode(pairs).encode()


def vonage_payload(status: str = "delivered", uuid_: str = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
                   **extra: Any) -> dict[str, Any]:
    return {"message_uuid": uuid_, "to": "447700900000", "from": "447700900001",
            "timestamp": "2020-01-01T14:00:00.000Z", "status": status, "channel": "sms", **extra}


def vonage_claims(body: bytes, **overrides: Any) -> dict[str, Any]:
    """Vonage's claims for this body, issued at the test clock's NOW (pass iat= for a real process)."""
    claims = {"iat": int(NOW.timestamp()), "jti": str(uuid.uuid4()), "iss": "Vonage",
              "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": "a1b2c3d",
              "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def vonage_request(payload: dict[str, Any] | bytes, *, secret: str = VONAGE_SECRET,
                   algorithm: str = "HS256", **claims: Any) -> tuple[dict[str, str], bytes]:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    token = jwt.encode(vonage_claims(body, **claims), secret, algorithm=algorithm)
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}, body


def vonage_sms_receipt(status: str = "delivered", **extra: str) -> dict[str, str]:
    """A delivery receipt's fields as docs/vonage.md lists them, without `sig`."""
    return {"msisdn": "447700900000", "to": "AcmeInc", "network-code": "23410", "messageId": "0A0000001234567B",
            "price": "0.03330000", "status": status, "scts": "2611240929", "err-code": "0",
            "api-key": "abcd1234", "message-timestamp": "2026-11-24 09:29:58", "timestamp": "1795512598",
            "nonce": "6c6ee1a8-8a3f-4b8e-9f86-0d7c8c1b2a3e", **extra}


def vonage_sms_sig(fields: dict[str, str], secret: str = VONAGE_SMS_SECRET) -> str:
    """md5hash, written from Vonage's description (the v3 SDK's vectors in vectors.json agree)."""
    text = "".join(f"&{key}={fields[key].replace('&', '_').replace('=', '_')}" for key in sorted(fields))
    return hashlib.md5((text + secret).encode()).hexdigest()
