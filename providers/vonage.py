"""Vonage Messages API webhooks (status and inbound): a HS256 JWT whose `payload_hash` binds it to the body.

Signed webhooks: https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks
Status fields:   https://developer.vonage.com/en/api/messages#message-status
Inbound fields:  https://developer.vonage.com/en/api/messages#inbound-message (docs/vonage.md, Inbound)
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import math
import mimetypes
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

import jwt
import orjson
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode, base64url_encode
from pydantic import Field

from gateway.errors import InvalidToken, Malformed, Unsigned
from gateway.model import Fragment, Media, Reason, Status, StatusEvent, Unread, utc_iso
from providers.base import (
    Fields,
    Inbound,
    Parsed,
    Reasons,
    SampleRequest,
    Scenario,
    Secrets,
    Settings,
    described,
    reason_from,
    text_of,
)
from providers.base import Settings as BaseSettings
from providers.decoding import decode_json_object

STATUSES: dict[str, Status] = {
    "submitted": Status.SENT,
    "delivered": Status.DELIVERED,
    "undeliverable": Status.UNDELIVERED,
    "rejected": Status.REJECTED,
    "read": Status.READ,
}

# Messages API error codes (https://developer.vonage.com/en/api-errors/messages): code →
# (category, permanent, Vonage's title).
REASONS: Reasons = {
    "1000": ("rate_limited", False, "Throttled"),
    "1010": ("content_rejected", True, "Missing params"),
    "1020": ("content_rejected", True, "Invalid params"),
    "1021": ("content_rejected", True, "Invalid tag"),
    "1022": ("content_rejected", True, "Invalid template (parameters)"),
    "1030": ("provider_error", False, "Internal error"),
    "1040": ("invalid_number", True, "Invalid message"),
    "1050": ("blocked", True, "Number barred"),
    "1060": ("account_problem", True, "Partner account barred"),
    "1070": ("account_problem", True, "Partner quota exceeded"),
    "1080": ("account_problem", True, "Account not enabled for REST"),
    "1090": ("content_rejected", True, "Message too long"),
    "1100": ("provider_error", False, "Communication Failed"),
    "1110": ("account_problem", True, "Invalid Signature"),
    "1120": ("sender_rejected", True, "Illegal Sender Address - rejected"),
    "1130": ("content_rejected", True, "Invalid TTL"),
    "1140": ("account_problem", True, "Facility not allowed"),
    "1150": ("content_rejected", True, "Invalid Message class"),
    "1160": ("account_problem", True, "Non White-listed Destination"),
    "1170": ("invalid_number", True, "Invalid or Missing Msisdn Param"),
    "1180": ("unreachable", False, "Absent Subscriber Temporary"),
    "1190": ("invalid_number", True, "Absent Subscriber Permanent"),
    "1200": ("unroutable", True, "Portability Error"),
    "1210": ("spam_filtered", True, "Anti-Spam Rejection"),
    "1220": ("unreachable", False, "Handset Busy"),
    "1230": ("provider_error", False, "Network Error"),
    "1240": ("opted_out", True, "Illegal Number"),
    "1241": ("rate_limited", False, "Too many send requests"),
    "1250": ("unroutable", True, "Unroutable"),
    "1260": ("unroutable", True, "Destination unreachable"),
    "1270": ("blocked", True, "Subscriber Age Restriction"),
    "1280": ("blocked", True, "Number Blocked by Carrier"),
    "1290": ("unreachable", False, "Pre-Paid - Insufficent funds"),
    "1300": ("invalid_number", True, "Not part of the provider network"),
    "1310": ("invalid_number", True, "Not suitable device"),
    "1320": ("content_rejected", True, "Message already sent"),
    "1330": ("unknown", False, "Unknown"),
    "1340": ("content_rejected", True, "Outside of the allowed window"),
    "1350": ("account_problem", True, "Phone matching fee not paid"),
    "1360": ("expired", False, "TTL was activated"),
    "1370": ("account_problem", True, "Expired access Token"),
    "1420": ("sender_rejected", True, "Invalid sender"),
    "1430": ("invalid_number", True, "Invalid recipient"),
    "1460": ("account_problem", True, "(account error, title unknown)"),
    "1470": ("blocked", True, "Fraud Defender (title unknown)"),
    "1472": ("blocked", True, "Fraud Defender (title unknown)"),
    "1476": ("sender_rejected", True, "(compliance error, title unknown)"),
    "1480": ("sender_rejected", True, "Entity filter"),
    "1481": ("sender_rejected", True, "Header filter"),
    "1482": ("sender_rejected", True, "Content filter"),
    "1483": ("sender_rejected", True, "Consent filter"),
}
# A failure without a code (README, Why it failed).
FALLBACKS = {Status.UNDELIVERED: "provider_error", Status.REJECTED: "unknown"}
# The code at the end of error.type: https://developer.vonage.com/api-errors/messages#1250
TYPE_CODE = re.compile(r"#(\d+)$")

# The wire's channel words, as the event names them (the vendor's Java SDK also reads viber_service as viber).
CHANNELS: dict[str, str] = {
    "sms": "sms", "mms": "mms", "rcs": "rcs", "whatsapp": "whatsapp", "messenger": "messenger",
    "viber_service": "viber", "viber": "viber",
}
# Inbound message types whose content is one attachment {url, name?, caption?}.
ATTACHMENTS = ("image", "audio", "video", "file", "vcard", "sticker")
# Inbound message types read as text: (the object, its field that holds the text).
TEXT_IN = {"reply": "title", "button": "text"}
# Python's own table only, not the machine's /etc/mime.types: the same guess on every machine.
MIME_TYPES = mimetypes.MimeTypes()
RECEIVED = "received"  # provider_status of an inbound message: Vonage sends no status word for one

HS256 = HMACAlgorithm(HMACAlgorithm.SHA256)
# A compact JWS: three base64url parts. Checked first, so no lenient decoding can read junk as a token.
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class VonageSettings(Settings):
    signature_secret: Secrets
    max_token_age: int = Field(default=300, gt=0)  # seconds; an older `iat` is a replay
    clock_skew: int = Field(default=60, ge=0)  # seconds an `iat` may lie in our future
    # Vonage may, after an internal error, send a status unsigned and retries it signed after a 5xx.
    unsigned: Literal["retry", "refuse"] = "retry"


SETUP = """\
    Paste it as the Status URL (POST) of your Vonage application's Messages capability, and as its
    Inbound URL too: incoming messages (SMS, MMS, WhatsApp, …) are then stored as inbound events.
    Signed webhooks are on by default; signature_secret is the account's signature secret
    (Dashboard → API Settings)."""


class Vonage:
    key: ClassVar[str] = "vonage"
    name: ClassVar[str] = "vonage"
    ack: ClassVar[tuple[bytes, str]] = (b"", "text/plain")
    methods: ClassVar[tuple[str, ...]] = ("POST",)
    media_types: ClassVar[frozenset[str]] = frozenset({"application/json"})
    signature_headers: ClassVar[tuple[str, ...]] = ("authorization",)
    Settings: ClassVar[type[BaseSettings]] = VonageSettings
    aliases: ClassVar[dict[str, str]] = {"sent": "submitted", "undelivered": "undeliverable", "failed": "rejected"}
    failure_code: ClassVar[str] = "1250"
    scenarios: ClassVar[dict[str, Scenario]] = {
        "lifecycle": [("submitted", 1), ("delivered", 1)],
        "out-of-order": [("delivered", 1), ("submitted", 1)],
        "duplicate": [("delivered", 3)],
        "failure": [("submitted", 1), ("rejected", 1)],
        # Failures of other reason categories (README, Why it failed), each with its own code.
        "opted-out": [("submitted", 1), ("rejected", 1, "1240")],
        "invalid-number": [("submitted", 1), ("undeliverable", 1, "1300")],
        "spam-filtered": [("submitted", 1), ("rejected", 1, "1210")],
        "unreachable": [("submitted", 1), ("undeliverable", 1, "1180")],
        # An incoming message, then the statuses of the reply the app sends through the API.
        "conversation": [("received", 1), ("submitted", 1), ("delivered", 1)],
    }

    def __init__(self, endpoint: str, settings: VonageSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self._keys = tuple(HS256.prepare_key(secret) for secret in settings.signature_secret)
        self._max_age = settings.max_token_age
        self._skew = settings.clock_skew
        self._retry_unsigned = settings.unsigned == "retry"

    def verify(self, inbound: Inbound) -> Fields:
        claims = self._claims(inbound)
        payload_hash = claims.get("payload_hash")
        if not isinstance(payload_hash, str):
            raise InvalidToken("the token has no payload_hash claim")
        if not hmac.compare_digest(payload_hash.lower(), hashlib.sha256(inbound.body).hexdigest()):
            raise InvalidToken("payload_hash does not match the SHA-256 of the body")
        payload = decode_json_object(inbound.body)
        api_key = claims.get("api_key")
        return {"payload": payload, "api_key": api_key if isinstance(api_key, str) else None}

    def _claims(self, inbound: Inbound) -> dict[str, Any]:
        authorization = inbound.headers.get("authorization")
        if not authorization:
            if self._retry_unsigned:
                raise Unsigned("no Authorization header; Vonage retries an unsigned callback signed after a 503")
            raise InvalidToken("missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise InvalidToken("the Authorization header is not a Bearer token")
        claims = self._decode(token)
        iat = claims["iat"]
        if not _is_number(iat):
            raise InvalidToken("the token's iat is not a number")
        now = inbound.received_at.timestamp()
        if iat > now + self._skew:
            raise InvalidToken("the token's iat is in the future (check this server's clock)")
        if now - iat > self._max_age:
            raise InvalidToken(f"the token is older than max_token_age ({self._max_age} s)")
        exp = claims.get("exp")
        if exp is not None and (not _is_number(exp) or exp <= now):
            raise InvalidToken("the token has expired")
        issuer = claims.get("iss")
        if issuer is not None and issuer != "Vonage":
            raise InvalidToken("the token was not issued by Vonage")
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        """The verified claims of an HS256 token, with PyJWT's HMAC algorithm and base64url decoding.

        jwt.decode does the same and more (options, claim checks we do ourselves against our own
        clock) at seven times the cost; tests/providers/test_sdk_equivalence.py holds the two to the same
        answers. Nothing but HS256 is accepted, and no JWS extension (`crit`, unencoded `b64`).
        """
        if not COMPACT_JWS.fullmatch(token):
            raise InvalidToken("the token is not a JWT")
        signing_input, _, signature_part = token.rpartition(".")
        header_part, _, payload_part = signing_input.partition(".")
        try:
            header = orjson.loads(_segment(header_part))
            claims = orjson.loads(_segment(payload_part))
            signature = _segment(signature_part)
        except (binascii.Error, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise InvalidToken("the token is not a JWT") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("the token is not a JWT")
        if header.get("alg") != "HS256":
            raise InvalidToken("the token's alg must be HS256")
        if "crit" in header or "b64" in header:
            raise InvalidToken("the token uses a JWS extension Vonage does not send")
        message = signing_input.encode()
        # Every configured secret is tried: rotation keeps the old one valid for a while.
        if not any(HS256.verify(message, key, signature) for key in self._keys):
            raise InvalidToken("the token's signature does not match any signature_secret")
        if "iat" not in claims:
            raise InvalidToken("the token has no iat claim")
        return claims

    def explain(self, inbound: Inbound, others: Sequence[Any]) -> list[str]:
        """Reads the token's parts without trusting them, then each check on its own: which
        configured secret signed it, the body's payload_hash, and the token's age at arrival."""
        authorization = inbound.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if not authorization:
            return ["It has no Authorization header: it was sent unsigned. Turn on signed webhooks for the "
                    "application (Vonage retries an unsigned callback signed after the 503 it got); an unsigned "
                    "callback can never be verified, so it cannot be replayed."]
        if scheme.lower() != "bearer" or not COMPACT_JWS.fullmatch(token):
            return ["Its Authorization header is not a Vonage token (Bearer and a JWT): it did not come from Vonage."]
        signing_input, _, signature_part = token.rpartition(".")
        try:
            header = orjson.loads(_segment(signing_input.partition(".")[0]))
            claims = orjson.loads(_segment(signing_input.partition(".")[2]))
            signature = _segment(signature_part)
        except (binascii.Error, ValueError):
            return ["Its token cannot be decoded: it did not come from Vonage."]
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "HS256":
            return ["Its token is not an HS256 JWT, the only kind Vonage signs webhooks with: "
                    "it did not come from Vonage."]
        findings = []
        endpoints: list[Vonage] = [self, *(o for o in others if isinstance(o, Vonage))]
        owner = next((e for e in endpoints for key in e._keys if HS256.verify(signing_input.encode(), key, signature)),
                     None)
        if owner is None:
            findings.append(f"The token is signed with a secret that is not in the config: add the account's current "
                            f"signature secret (Dashboard → API Settings → Signature secret) to signature_secret of "
                            f"endpoint {self.endpoint} (a list keeps the old one valid while you switch).")
        elif owner is not self:
            findings.append(f"The token is signed with the signature_secret of endpoint {owner.endpoint}: that "
                            f"account's webhooks come to endpoint {self.endpoint}'s URL. Point them at endpoint "
                            f"{owner.endpoint}'s URL (status-gateway urls), or add that secret to signature_secret "
                            f"of endpoint {self.endpoint}.")
        payload_hash = claims.get("payload_hash")
        if not isinstance(payload_hash, str):
            findings.append("The token has no payload_hash claim, which every Vonage webhook token carries.")
        elif not hmac.compare_digest(payload_hash.lower(), hashlib.sha256(inbound.body).hexdigest()):
            findings.append("The body is not the one Vonage signed (its SHA-256 differs from the token's "
                            "payload_hash): something between Vonage and the gateway changed it. "
                            "It cannot be replayed.")
        findings += self._age(claims, inbound)
        return findings or ["Every check passes for this endpoint's settings."]

    def _age(self, claims: dict[str, Any], inbound: Inbound) -> list[str]:
        now = inbound.received_at.timestamp()
        iat: Any = claims.get("iat")
        exp: Any = claims.get("exp")
        findings = []
        if not _is_number(iat):
            findings.append("The token has no numeric iat claim, which every Vonage webhook token carries.")
        elif iat > now + self._skew:
            findings.append(f"The token was issued {iat - now:.0f} s after it arrived: this server's clock is behind. "
                            f"Fix the clock (NTP), or raise clock_skew of endpoint {self.endpoint} to at least "
                            f"{math.ceil(iat - now)}.")
        elif now - iat > self._max_age:
            findings.append(f"The token was {now - iat:.0f} s old when it arrived, more than max_token_age "
                            f"({self._max_age} s): raise max_token_age of endpoint {self.endpoint} to at least "
                            f"{math.ceil(now - iat)}, or check this server's clock (it may run ahead).")
        if exp is not None and (not _is_number(exp) or exp <= now):
            late = f"{now - exp:.0f} s before it arrived" if _is_number(exp) else "(its exp is not a number)"
            findings.append(f"The token had expired {late}: Vonage sent it late, or this server's clock runs ahead.")
        issuer = claims.get("iss")
        if issuer is not None and issuer != "Vonage":
            findings.append(f"The token was issued by {issuer!r}, not Vonage.")
        return findings

    def parse(self, fields: Fields, inbound: Inbound) -> Parsed:
        """A status has `status`; an inbound message has `message_type` and no `status` (v0.1 nested
        it in `message.content`); anything else is a genuine callback of a kind not read yet."""
        payload: dict[str, Any] = fields["payload"]
        if "status" in payload:
            return self._status(payload, fields, inbound)
        content = _content(payload)
        if isinstance(content.get("message_type", content.get("type")), str):
            return self._incoming(payload, content, fields, inbound)
        return Unread("a Vonage webhook with neither status nor message_type", payload)

    def _status(self, payload: dict[str, Any], fields: Fields, inbound: Inbound) -> StatusEvent:
        message_id, word = payload.get("message_uuid"), payload.get("status")
        if not isinstance(message_id, str) or not message_id or not isinstance(word, str) or not word:
            raise Malformed("a Vonage status webhook needs message_uuid and status as strings")
        error_code, said = _error(payload.get("error"))
        status = STATUSES.get(word.lower(), Status.UNKNOWN)
        return StatusEvent(
            provider=self.name,
            endpoint=self.endpoint,
            message_id=message_id,
            status=status,
            provider_status=word,
            error_code=error_code,
            error_message=said or described(REASONS, error_code),
            to=_address(payload.get("to")),
            sender=_address(payload.get("from")),
            channel=_channel(payload),
            account=fields["api_key"],
            occurred_at=_timestamp(payload.get("timestamp")),
            received_at=utc_iso(inbound.received_at),
            raw=payload,
            reason=reason_from(REASONS, status, error_code, said, FALLBACKS),
        )

    def _incoming(self, payload: dict[str, Any], content: dict[str, Any], fields: Fields,
                  inbound: Inbound) -> StatusEvent | Unread:
        """An inbound message of a type this reads (text, one attachment, `content` attachments,
        a WhatsApp reply or button); any other type or channel is kept Unread, never refused."""
        message_type = content.get("message_type", content.get("type"))
        message_id, channel = payload.get("message_uuid"), _channel(payload)
        if not isinstance(message_id, str) or not message_id:
            return Unread("a Vonage inbound message without message_uuid", payload)
        if channel not in CHANNELS.values():
            return Unread(f"a Vonage inbound message on channel {channel}", payload)
        text: Any = None
        media: list[Media] | None = []
        if message_type == "text":
            text = content.get("text")
        elif message_type in ATTACHMENTS:
            attachment = content.get(message_type)
            media = _media([attachment])
            text = attachment.get("caption") if isinstance(attachment, dict) else None
        elif message_type == "content":
            attachments = content.get("content")
            media = _media(attachments if isinstance(attachments, list) else [None])
        elif message_type in TEXT_IN and isinstance(content.get(message_type), dict):
            text = content[message_type].get(TEXT_IN[message_type])
        else:
            return Unread(f"a Vonage inbound message of message_type {message_type}", payload)
        if media is None or not (text is None or isinstance(text, str)):
            return Unread(f"a Vonage inbound {message_type} message in a shape not read yet", payload)
        return StatusEvent(
            provider=self.name, endpoint=self.endpoint, message_id=message_id,
            status=Status.RECEIVED, provider_status=RECEIVED,
            to=_address(payload.get("to")), sender=_address(payload.get("from")), channel=channel,
            account=fields["api_key"], occurred_at=_timestamp(payload.get("timestamp")),
            received_at=utc_iso(inbound.received_at), raw=payload,
            direction="inbound", text=text, media=tuple(media),
        )

    @staticmethod
    def wrote(event: StatusEvent) -> bool:
        return "err-code" not in event.raw  # the SMS API's receipts, also named vonage, have one

    @staticmethod
    def reason(event: StatusEvent) -> Reason | None:
        return reason_from(REASONS, event.status, event.error_code, event.error_message, FALLBACKS)

    def join(self, parts: Sequence[Fragment]) -> StatusEvent:
        raise NotImplementedError("the Messages API sends a multi-part SMS whole")

    def answer(self, event: StatusEvent, inbound: Inbound) -> tuple[bytes, str] | None:
        return None  # Vonage reads only the status code

    @staticmethod
    def setup(url: str) -> str:
        return SETUP

    @staticmethod
    def new_message_id() -> str:
        return str(uuid.uuid4())

    def sample(self, *, url: str, word: str, message_id: str, account_seed: str, now: datetime,
               error_code: str | None = None) -> SampleRequest:
        return self.sample_request(url=url, signature_secret=self.settings.signature_secret[0],
                                   message_id=message_id, status=word, api_key=account_seed[:8], now=now,
                                   error_code=error_code)

    @staticmethod
    def sample_request(
        *, url: str, signature_secret: str, message_id: str, status: str, api_key: str,
        now: datetime, error_code: str | None = None, to: str = "447700900000", sender: str = "447700900001",
    ) -> SampleRequest:
        """A status webhook (for `received`, an inbound message) as Vonage sends it, signed with PyJWT
        and Vonage's claims (used by `simulate`)."""
        timestamp = now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        payload: dict[str, Any] = {
            "message_uuid": message_id, "to": to, "from": sender, "timestamp": timestamp,
            "status": status, "channel": "sms",
        }
        if status == RECEIVED:  # from the user to the number: no status, a message_type and its text
            payload = {
                "channel": "sms", "message_uuid": message_id, "to": sender, "from": to, "timestamp": timestamp,
                "message_type": "text", "text": "Hi, is my order on its way?",
                "sms": {"num_messages": "1", "keyword": "HI,"}, "usage": {"currency": "EUR", "price": "0.0057"},
            }
        if status == "submitted":
            payload["usage"] = {"currency": "EUR", "price": "0.0333"}
        if error_code:
            payload["error"] = {
                "type": f"https://developer.vonage.com/api-errors/messages#{error_code}",
                "title": int(error_code) if error_code.isdigit() else error_code,
                "detail": described(REASONS, error_code) or "Message failed",
            }
        body = orjson.dumps(payload)
        claims = {
            "iat": int(now.timestamp()), "jti": str(uuid.uuid4()), "iss": "Vonage",
            "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": api_key,
            "application_id": str(uuid.uuid5(uuid.NAMESPACE_URL, url)),
        }
        token = jwt.encode(claims, signature_secret, algorithm="HS256")
        return SampleRequest(
            method="POST", url=url,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            body=body,
        )


def _segment(part: str) -> bytes:
    """A base64url segment, only in its one canonical spelling (as PyJWT insists since 2.10).

    The last character of a segment carries unused bits; a token that differs only there decodes
    to the same bytes, and would be a second spelling of one signed token.
    """
    data = base64url_decode(part)
    if base64url_encode(data) != part.encode():
        raise ValueError("non-canonical base64url")
    return data


def _is_number(value: Any) -> bool:
    # PyJWT's JSON parser accepts NaN and Infinity, which would slip through every time comparison.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _address(value: Any) -> str | None:
    """v1 sends flat strings; the older v0.1 shape was {"type": "sms", "number": "…"}."""
    if isinstance(value, dict):
        value = value.get("number") or value.get("id")
    return value if isinstance(value, str) else None


def _error(error: Any) -> tuple[str | None, str | None]:
    """(code, Vonage's words) of a status's `error`: the code is the `#NNNN` ending `error.type`,
    else a numeric `error.title` (a number or a string), else v0.1's `error.code`; the words are
    `detail` (v1) or `reason` (v0.1)."""
    if not isinstance(error, dict):
        return None, None
    found = TYPE_CODE.search(error["type"]) if isinstance(error.get("type"), str) else None
    title = text_of(error.get("title"))
    code = found.group(1) if found else title if title and title.isdigit() else text_of(error.get("code"))
    said = text_of(error.get("detail")) or text_of(error.get("reason"))
    if said is None and title and not title.isdigit():
        said = title
    return code, said


def _content(payload: dict[str, Any]) -> dict[str, Any]:
    """Where an inbound message's type and content are: the top level (v1), or v0.1's `message.content`."""
    message = payload.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if "message_type" not in payload and isinstance(content, dict) else payload


def _channel(payload: dict[str, Any]) -> str | None:
    """v1's `channel`, or v0.1's `to.type`; in the event's words (viber_service is viber)."""
    channel = payload.get("channel")
    if channel is None and isinstance(payload.get("to"), dict):
        channel = payload["to"].get("type")
    if not isinstance(channel, str):
        return None
    return CHANNELS.get(channel, channel)


def _media(attachments: list[Any]) -> list[Media] | None:
    """Each attachment's URL, with a content type guessed from its name (Vonage sends none); None
    if one has no URL."""
    media = []
    for attachment in attachments:
        url = attachment.get("url") if isinstance(attachment, dict) else None
        if not isinstance(url, str) or not url:
            return None
        name = attachment.get("name")
        media.append(Media(url, MIME_TYPES.guess_type(name if isinstance(name, str) else url, strict=False)[0]))
    return media


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return utc_iso(moment)
    except (ValueError, OverflowError):
        return None
