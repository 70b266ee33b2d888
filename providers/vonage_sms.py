"""Vonage SMS API delivery receipts (DLRs) and inbound SMS: fields signed with `sig`, by MD5 hash or an HMAC.

The legacy SMS API (the Messages API is providers/vonage.py) pushes one receipt per SMS part as a
GET query, a POST form or a POST-JSON object, as chosen in the Dashboard. Signed receipts carry
`sig`, `timestamp` and `nonce`; signing is switched on per account (Dashboard → API Settings).
An inbound SMS comes the same ways, with the same `sig`; a long one comes in parts (`concat-*`),
each its own webhook, which the store keeps until all are here (a Fragment each).
DLR fields and codes:  https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts
Inbound SMS:           https://developer.vonage.com/en/messaging/sms/guides/inbound-sms
Signing algorithm:     https://developer.vonage.com/en/getting-started/concepts/signing-messages
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, get_args

import orjson

from gateway.errors import GatewayError, InvalidSignature, Malformed
from gateway.model import Fragment, Reason, Status, StatusEvent, Unread, utc_iso
from providers.base import (
    Fields,
    Inbound,
    Parsed,
    Reasons,
    SampleRequest,
    Scenario,
    Secrets,
    Settings,
    carrier_time,
    described,
    reason_from,
    text_of,
)
from providers.base import Settings as BaseSettings
from providers.decoding import decode_json_object, decode_pairs

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# docs/events.md#statuses, column "Vonage SMS API".
STATUSES: dict[str, Status] = {
    "buffered": Status.SENDING,
    "accepted": Status.SENT,
    "delivered": Status.DELIVERED,
    "failed": Status.UNDELIVERED,
    "undelivered": Status.UNDELIVERED,  # in Vonage's receipt guide's list, besides failed
    "rejected": Status.REJECTED,
    "expired": Status.EXPIRED,
    "unknown": Status.UNKNOWN,
}

# `err-code` (https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts; 16 from
# nyaruka/courier's table): code → (category, permanent, Vonage's title); 0 is no error.
REASONS: Reasons = {
    "0": (None, False, "Delivered"),
    "1": ("unknown", False, "Unknown"),
    "2": ("unreachable", False, "Absent Subscriber - Temporary"),
    "3": ("invalid_number", True, "Absent Subscriber - Permanent"),
    "4": ("blocked", True, "Call Barred by User"),
    "5": ("unroutable", True, "Portability Error"),
    "6": ("spam_filtered", True, "Anti-Spam Rejection"),
    "7": ("unreachable", False, "Handset Busy"),
    "8": ("provider_error", False, "Network Error"),
    "9": ("opted_out", True, "Illegal Number"),
    "10": ("content_rejected", True, "Illegal Message"),
    "11": ("unroutable", True, "Unroutable"),
    "12": ("unroutable", True, "Destination Unreachable"),
    "13": ("blocked", True, "Subscriber Age Restriction"),
    "14": ("blocked", True, "Number Blocked by Carrier"),
    "15": ("unreachable", False, "Prepaid Insufficient Funds"),
    "16": ("rate_limited", False, "Gateway Quota Exceeded"),
    "50": ("sender_rejected", True, "Entity Filter"),
    "51": ("sender_rejected", True, "Header Filter"),
    "52": ("sender_rejected", True, "Content Filter"),
    "53": ("sender_rejected", True, "Consent Filter"),
    "54": ("sender_rejected", True, "Regulation Error"),
    "99": ("provider_error", False, "General Error"),
}
# A failure without a code (README, Why it failed).
FALLBACKS = {Status.EXPIRED: "expired"}

RECEIVED = "received"  # provider_status of an inbound SMS: it has no status word
MAX_PARTS = 255  # a concatenated SMS's part count is one byte of its header

# "md5hash" is md5(string + secret), the Dashboard's default; the others are HMACs keyed with the secret.
SignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]


class VonageSMSSettings(Settings):
    signature_secret: Secrets
    signature_method: SignatureMethod = "md5hash"


SETUP = """\
    Paste it as the Delivery receipts webhook URL (Dashboard → API Settings → SMS settings; POST-JSON,
    POST or GET all work), and as the Inbound SMS webhook URL of the account or the number: incoming
    SMS are then stored as inbound events, a long one once all its parts are here.
    Ask Vonage to sign this API key's webhooks and set signature_method
    to the method it signs with (md5hash is the Dashboard's default)."""


class VonageSMS:
    key: ClassVar[str] = "vonage-sms"
    name: ClassVar[str] = "vonage"  # the same provider as the Messages API: one message namespace
    ack: ClassVar[tuple[bytes, str]] = (b"", "text/plain")
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")
    media_types: ClassVar[frozenset[str]] = frozenset({FORM, JSON})
    signature_headers: ClassVar[tuple[str, ...]] = ()  # sig travels among the fields
    Settings: ClassVar[type[BaseSettings]] = VonageSMSSettings
    aliases: ClassVar[dict[str, str]] = {"sent": "accepted", "sending": "buffered", "undelivered": "failed"}
    failure_code: ClassVar[str] = "2"
    scenarios: ClassVar[dict[str, Scenario]] = {
        "lifecycle": [("buffered", 1), ("accepted", 1), ("delivered", 1)],
        "out-of-order": [("delivered", 1), ("accepted", 1)],
        "duplicate": [("delivered", 3)],
        "failure": [("accepted", 1), ("failed", 1)],
        # Failures of other reason categories (README, Why it failed), each with its own code.
        "opted-out": [("accepted", 1), ("rejected", 1, "9")],
        "invalid-number": [("accepted", 1), ("failed", 1, "3")],
        "spam-filtered": [("accepted", 1), ("rejected", 1, "6")],
        "expired": [("accepted", 1), ("expired", 1)],
        # An incoming SMS, then the statuses of the reply the app sends through the API.
        "conversation": [("received", 1), ("accepted", 1), ("delivered", 1)],
    }

    def __init__(self, endpoint: str, settings: VonageSMSSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self._secrets = settings.signature_secret
        self._method = settings.signature_method

    def verify(self, inbound: Inbound) -> Fields:
        fields = _received(inbound)
        signature = fields.pop("sig", None)
        if not isinstance(signature, str) or not signature:
            raise InvalidSignature("no sig parameter: turn on signed webhooks for this API key "
                                   "(Dashboard → API Settings) and set signature_method to match")
        given, text = signature.lower().encode(), _signing_text(fields)
        # Every configured secret is tried: rotation keeps the old one valid for a while.
        if not any(hmac.compare_digest(given, _digest(text, secret, self._method).encode())
                   for secret in self._secrets):
            raise InvalidSignature(f"sig does not match the fields with signature_method {self._method} "
                                   "(check the method and the signature secret)")
        return fields

    def explain(self, inbound: Inbound, others: Sequence[Any]) -> list[str]:
        """Every signature method with every secret in the config: the Dashboard's method is set
        per account and the config's may not match it."""
        try:
            fields = _received(inbound)
        except GatewayError as exc:
            return [f"Its fields cannot be read: {exc}."]
        signature = fields.pop("sig", None)
        if not isinstance(signature, str) or not signature:
            return ["It has no sig field: signed webhooks are off for this API key. Ask Vonage to sign them "
                    "(Dashboard → API Settings) and set signature_method to match; an unsigned one cannot be replayed."]
        given, text = signature.lower().encode(), _signing_text(fields)
        endpoints: list[VonageSMS] = [self, *(o for o in others if isinstance(o, VonageSMS))]
        for owner in endpoints:
            for method in get_args(SignatureMethod):
                if not any(hmac.compare_digest(given, _digest(text, secret, method).encode())
                           for secret in owner._secrets):
                    continue
                if owner is self:
                    return [f"sig matches signature_method {method}, not {self._method}: set signature_method: "
                            f"{method} on endpoint {self.endpoint}."]
                also = f" and set signature_method: {method}" if method != self._method else ""
                return [f"sig is made with the signature_secret of endpoint {owner.endpoint} (signature_method "
                        f"{method}): that account's webhooks come to endpoint {self.endpoint}'s URL. Point them at "
                        f"endpoint {owner.endpoint}'s URL (status-gateway urls), or add that secret to "
                        f"signature_secret of endpoint {self.endpoint}{also}."]
        methods = ", ".join(get_args(SignatureMethod))
        return [f"No signature_secret in the config makes this sig with any method ({methods}): add the account's "
                f"current signature secret (Dashboard → API Settings) to signature_secret of endpoint {self.endpoint}."]

    def parse(self, fields: Fields, inbound: Inbound) -> Parsed:
        """A receipt has `status`; an inbound SMS has `msisdn` and `type` (text, unicode or
        binary) and no `status`; anything else is a genuine callback of a kind not read yet."""
        if "status" not in fields:
            if "type" in fields and "msisdn" in fields:
                return self._incoming(fields, inbound)
            return Unread("a Vonage SMS API webhook that is neither a receipt nor an inbound SMS", dict(fields))
        message_id, word = fields.get("messageId"), fields.get("status")
        if not isinstance(message_id, str) or not message_id or not isinstance(word, str) or not word:
            raise Malformed("a Vonage delivery receipt needs messageId and status")
        error_code = text_of(fields.get("err-code"))
        if error_code == "0":
            error_code = None
        status = STATUSES.get(word.lower(), Status.UNKNOWN)
        pushed = _message_timestamp(fields.get("message-timestamp"))
        received_at = utc_iso(inbound.received_at)
        return StatusEvent(
            provider=self.name,
            endpoint=self.endpoint,
            message_id=message_id,
            status=status,
            provider_status=word,
            error_code=error_code,
            error_message=described(REASONS, error_code),
            to=text_of(fields.get("msisdn")),  # the recipient; the receipt's `to` is the sender id
            sender=text_of(fields.get("to")),
            channel="sms",
            account=text_of(fields.get("api-key")),
            # scts is the carrier's time in no named zone: read as UTC, never after Vonage began
            # pushing the receipt (message-timestamp, UTC), which stands in when scts is unreadable.
            occurred_at=carrier_time(text_of(fields.get("scts")), not_after=pushed or received_at) or pushed,
            received_at=received_at,
            raw=dict(fields),
            reason=reason_from(REASONS, status, error_code, None, FALLBACKS),
        )

    def _incoming(self, fields: Fields, inbound: Inbound) -> StatusEvent | Fragment | Unread:
        """One SMS, or one part of a long one: the parts of a message share (`api-key`, `msisdn`,
        `to`, `concat-ref`) and each has its own messageId; the joined message takes the first's."""
        if not isinstance(fields.get("messageId"), str) or not fields["messageId"]:
            return Unread("a Vonage inbound SMS without messageId", dict(fields))
        if fields.get("concat") not in ("true", True):  # strings on the wire; a JSON true read the same
            return self._message([dict(fields)], utc_iso(inbound.received_at))
        number, total = text_of(fields.get("concat-part")) or "", text_of(fields.get("concat-total")) or ""
        ref = text_of(fields.get("concat-ref"))
        if not (number.isdigit() and total.isdigit() and ref and 1 <= int(number) <= int(total) <= MAX_PARTS):
            # Genuine, but with no place among its parts: kept whole rather than refused (never retried).
            return Unread("a part of a Vonage inbound SMS without concat-ref, or with concat-part outside "
                          "1..concat-total (at most 255)", dict(fields))
        group = "\x1f".join((text_of(fields.get("api-key")) or "", text_of(fields.get("msisdn")) or "",
                             text_of(fields.get("to")) or "", ref, total))
        return Fragment(group=group, id=fields["messageId"], number=int(number), total=int(total), fields=dict(fields),
                        received_at=utc_iso(inbound.received_at))

    @staticmethod
    def wrote(event: StatusEvent) -> bool:
        return "err-code" in event.raw

    @staticmethod
    def reason(event: StatusEvent) -> Reason | None:
        return reason_from(REASONS, event.status, event.error_code, None, FALLBACKS)

    def join(self, parts: Sequence[Fragment]) -> StatusEvent:
        """The message from all its parts: their texts in part order, received when the last came."""
        return self._message([part.fields for part in parts], max(part.received_at for part in parts))

    def _message(self, parts: list[dict[str, Any]], received_at: str) -> StatusEvent:
        first = parts[0]
        texts = [part["text"] for part in parts if isinstance(part.get("text"), str)]
        text = "".join(texts) if len(texts) == len(parts) else None
        return StatusEvent(
            provider=self.name, endpoint=self.endpoint, message_id=first["messageId"],
            status=Status.RECEIVED, provider_status=RECEIVED,
            to=text_of(first.get("to")),  # inbound, `to` is your number and msisdn the sender
            sender=text_of(first.get("msisdn")), channel="sms", account=text_of(first.get("api-key")),
            occurred_at=_message_timestamp(first.get("message-timestamp")),
            received_at=received_at,
            # A binary SMS has `data` and `udh` instead of text: kept in raw, text null.
            raw=first if len(parts) == 1 else {"parts": parts},
            direction="inbound",
            text=text,
        )

    def answer(self, event: StatusEvent, inbound: Inbound) -> tuple[bytes, str] | None:
        return None  # Vonage reads only the status code

    @staticmethod
    def setup(url: str) -> str:
        return SETUP

    @staticmethod
    def new_message_id() -> str:
        return uuid.uuid4().hex[:16].upper()  # an SMS API messageId: 16 hex digits, one per SMS part

    def sample(self, *, url: str, word: str, message_id: str, account_seed: str, now: datetime,
               error_code: str | None = None) -> SampleRequest:
        return self.sample_request(url=url, signature_secret=self.settings.signature_secret[0],
                                   signature_method=self.settings.signature_method, message_id=message_id,
                                   status=word, api_key=account_seed[:8], now=now, error_code=error_code)

    @staticmethod
    def sample_request(
        *, url: str, signature_secret: str, signature_method: SignatureMethod, message_id: str, status: str,
        api_key: str, now: datetime, error_code: str | None = None, to: str = "447700900000", sender: str = "AcmeInc",
    ) -> SampleRequest:
        """A signed delivery receipt (for `received`, an inbound SMS to the number `to`) as Vonage
        sends it in the "POST-JSON" format (used by `simulate`)."""
        now = now.astimezone(timezone.utc)
        fields: dict[str, Any] = {
            "msisdn": to, "to": sender, "network-code": "23410", "messageId": message_id, "price": "0.03330000",
            "status": status, "scts": now.strftime("%y%m%d%H%M"), "err-code": error_code or "0",
            "api-key": api_key, "message-timestamp": now.strftime("%Y-%m-%d %H:%M:%S"),
            "timestamp": str(int(now.timestamp())), "nonce": str(uuid.uuid4()),
        }
        if status == RECEIVED:  # from the handset msisdn to your number: no status, a type and a text
            text = "Hi, is my order on its way?"
            fields = {
                "msisdn": "447700900001", "to": to, "messageId": message_id, "text": text, "type": "text",
                "keyword": text.split()[0].upper(), "api-key": api_key,
                "message-timestamp": fields["message-timestamp"], "timestamp": fields["timestamp"],
                "nonce": fields["nonce"],
            }
        fields["sig"] = sign(fields, signature_secret, signature_method)
        return SampleRequest(method="POST", url=url, headers={"Content-Type": JSON}, body=orjson.dumps(fields))


def sign(fields: Mapping[str, Any], secret: str, method: SignatureMethod) -> str:
    """Vonage's `sig` of the fields (without `sig`), lower-case hex, as the SDKs compute it.

    Keys sorted, "&key=value" each, `&` and `=` in a value replaced by `_`; then md5 of that text
    followed by the secret, or its HMAC keyed with the secret.
    """
    return _digest(_signing_text(fields), secret, method)


def _signing_text(fields: Mapping[str, Any]) -> bytes:
    return "".join(f"&{key}={_signed_value(fields[key])}" for key in sorted(fields)).encode()


def _signed_value(value: Any) -> str:
    return value.replace("&", "_").replace("=", "_") if isinstance(value, str) else f"{value}"


def _digest(text: bytes, secret: str, method: SignatureMethod) -> str:
    if method == "md5hash":
        return hashlib.md5(text + secret.encode()).hexdigest()
    return hmac.new(secret.encode(), text, method).hexdigest()


def _received(inbound: Inbound) -> dict[str, Any]:
    """Every field as received: the query of a GET, else the body. A POST's query is not signed and is ignored."""
    if inbound.method == "GET":
        pairs = decode_pairs(inbound.query.encode("latin-1"), "query string")
    elif inbound.media_type == JSON:
        data = decode_json_object(inbound.body)
        if any(isinstance(value, dict | list) for value in data.values()):
            raise Malformed("a delivery receipt's values are strings or numbers")
        return data
    else:
        pairs = decode_pairs(inbound.body, "form body")
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in fields:
            raise Malformed("a field is given twice")
        fields[key] = value
    return fields


def _message_timestamp(value: Any) -> str | None:
    """When Vonage started pushing the receipt, "2020-01-01 12:00:00" in UTC."""
    if not isinstance(value, str):
        return None
    try:
        return utc_iso(datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc))
    except ValueError:
        return None
