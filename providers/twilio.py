"""Twilio message status callbacks, verified with the SDK's RequestValidator.

Signature scheme: https://www.twilio.com/docs/usage/webhooks/webhooks-security
Callback fields:  https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from pydantic import Field, field_validator
from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.twiml.messaging_response import MessagingResponse

from gateway.errors import GatewayError, InvalidSignature, Malformed
from gateway.model import Fragment, Media, Reason, Status, StatusEvent, utc_iso
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
)
from providers.base import Settings as BaseSettings
from providers.decoding import decode_json_object, decode_pairs, decode_text

STATUSES: dict[str, Status] = {
    "accepted": Status.ACCEPTED,
    "scheduled": Status.SCHEDULED,
    "queued": Status.QUEUED,
    "sending": Status.SENDING,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "partially_delivered": Status.PARTIALLY_DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
    "canceled": Status.CANCELED,
    "read": Status.READ,
}

# An incoming message (PROVIDERS-INBOUND.md §1.3: real ones say SmsStatus=received, no MessageStatus).
RECEIVED = "received"
# "A very transitory state" of an incoming message: answered 200 and counted, not stored.
NOT_A_STATUS = frozenset({"receiving"})
# Twilio's own opt-out words (twilio.com/docs/messaging/tutorials/advanced-opt-out): Twilio blocks
# the sender and answers them itself, so the gateway's reply stays out. SPEC §8 lists the first six.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})

# Twilio's error codes (https://www.twilio.com/docs/api/errors, and the dictionary it publishes,
# twilio-error-codes.json): code → (category, permanent, Twilio's title). 30025 and 30026 are
# warnings, and 30018 may ride on a delivered message: no failure reason of their own.
REASONS: Reasons = {
    "30001": ("rate_limited", False, "Queue overflow"),
    "30002": ("account_problem", True, "Account suspended"),
    "30003": ("unreachable", False, "Unreachable destination handset"),
    "30004": ("blocked", True, "Message blocked"),
    "30005": ("invalid_number", True, "Unknown destination handset"),
    "30006": ("invalid_number", True, "Landline or unreachable carrier"),
    "30007": ("spam_filtered", True, "Message filtered"),
    "30008": ("unknown", False, "Unknown error"),
    "30009": ("provider_error", False, "Missing inbound segment"),
    "30010": ("account_problem", True, "Message price exceeds max price"),
    "30011": ("content_rejected", True, "MMS not supported by the receiving phone number in this region"),
    "30012": ("content_rejected", True, "TTL is too small"),
    "30013": ("content_rejected", True, "TTL is too big"),
    "30014": ("invalid_number", True, "'To' attributes are Invalid"),
    "30015": ("content_rejected", True, "Non-supported channel type is used"),
    "30016": ("content_rejected", True, "'To' and 'From' channel types are incompatible"),
    "30017": ("rate_limited", False, "Carrier network congestion"),
    "30018": ("sender_rejected", True, "Destination carrier requires sender ID pre-registration"),
    "30019": ("content_rejected", True, "Content size exceeds carrier limit"),
    "30020": ("provider_error", False, "Internal Failure with Message Scheduling"),
    "30021": ("provider_error", False, "Internal Failure with messaging service orchestrator"),
    "30022": ("rate_limited", False, "US A2P 10DLC - Rate Limits Exceeded"),
    "30023": ("rate_limited", False, "US A2P 10DLC - Daily Message Cap Reached"),
    "30024": ("sender_rejected", True, "Numeric Sender ID Not Provisioned on Carrier"),
    "30025": (None, False, "US A2P 10DLC - 50% T-Mobile Daily Message Limit Consumed"),
    "30026": (None, False, "US A2P 10DLC - 70% T-Mobile Daily Message Limit Consumed"),
    "30027": ("rate_limited", False, "US A2P 10DLC - T-Mobile Daily Message Limit Reached"),
    "30028": ("content_rejected", True, "Invalid API version"),
    "30029": ("content_rejected", True, "Invalid ContentRetention"),
    "30030": ("content_rejected", True, "Invalid AddressRetention"),
    "30031": ("content_rejected", True, "Invalid MaxRate"),
    "30032": ("sender_rejected", True, "Toll-Free Number Has Not Been Verified"),
    "30033": ("sender_rejected", True, "US A2P 10DLC - Campaign Suspended"),
    "30034": ("sender_rejected", True, "US A2P 10DLC - Message from an Unregistered Number"),
    "30035": ("sender_rejected", False, "US A2P 10DLC - Message from a number still being configured"),
    "30036": ("expired", False, "Validity Period Expired"),
    "30037": ("account_problem", True, "Outbound Messaging Disabled"),
    "30038": ("spam_filtered", True, "OTP Message Body Filtered"),
    "30039": ("spam_filtered", True, "Filtered to Prevent Message Loops"),
    "30040": ("sender_rejected", True, "Destination carrier requires Sender ID pre-registration"),
    "30041": ("sender_rejected", True, "Message from an unregistered number sent to a United Kingdom number"),
    "30042": ("sender_rejected", True, "The Sender ID is blocked as generic or it contains special characters"),
    "30043": ("blocked", True, "International SMS via Domestic Gateway"),
    "30410": ("provider_error", False, "Provider Timeout Error"),
    "30442": ("sender_rejected", True, "Toll-Free phone number verification rejection - Campaign Violation"),
    "30450": ("blocked", False, "Message delivery blocked"),
    "30454": ("rate_limited", False, "Account exceeded the messages limit"),
    "30485": ("unknown", False, "Message couldn't be delivered"),
    "30500": ("provider_error", False, "Twilio Internal Error"),
    "30884": ("sender_rejected", True, "Campaign vetting rejection - Spam/Phishing"),
    "21211": ("invalid_number", True, "Invalid 'To' Phone Number"),
    "21268": ("blocked", True, "Premium numbers are not permitted"),
    "21408": ("account_problem", True,
              "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"),
    "21606": ("sender_rejected", True,
              "The 'From' phone number provided is not a valid message-capable Twilio phone number "
              "for this destination"),
    "21608": ("account_problem", True, "The 'to' phone number provided is not yet verified for this account"),
    "21610": ("opted_out", True, "Attempt to send to unsubscribed recipient"),
    "21611": ("rate_limited", False, "This 'From' number has exceeded the maximum number of queued messages"),
    "21612": ("unroutable", True, "The 'To' phone number is not currently reachable via SMS"),
    "21614": ("invalid_number", True, "'To' number is not a valid mobile number"),
    "21617": ("content_rejected", True, "The concatenated message body exceeds the 1600 character limit"),
    "21635": ("invalid_number", True, "'To' number cannot be a landline"),
    "60005": ("provider_error", False, "Downstream Carrier Error"),
    "63003": ("invalid_number", True, "Channel could not find To address"),
    "63013": ("content_rejected", True, "Channel policy violation"),
    "63016": ("content_rejected", True, "Failed to send freeform message because you are outside the allowed window"),
    "63018": ("rate_limited", False, "Rate limit exceeded for Channel"),
    "63024": ("invalid_number", True, "Invalid message recipient"),
    "63026": ("spam_filtered", True, "Channel sender content flagged as spam"),
    "63033": ("opted_out", True, "Recipient blocked to receive message"),
}
# A failure without a code (README, Why it failed).
FALLBACKS = {Status.FAILED: "provider_error", Status.UNDELIVERED: "unknown"}

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
ACK = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
DIGESTS = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}
# Twilio retries only a failed connection, once, unless the URL asks for more (docs/twilio.md#retries):
# the connection-override fragment, which Twilio neither sends nor signs.
RETRY_FRAGMENT = "#rc=5&rp=all"

SETUP = """\
    Paste it as the status callback of a Messaging Service (Integration → Delivery Status Callback),
    or pass it as StatusCallback when creating a message, or as <Message action="…"> in TwiML.
    Incoming messages: the same URL as the number's (or the Messaging Service's) "A MESSAGE COMES IN"
    webhook, HTTP POST; a `reply:` on this endpoint answers them, and the reply's statuses come back here.
  With retries: {url}{fragment}
    Twilio by default retries only a failed connection, once; a 503 from the gateway
    (store unavailable) would lose the status. This connection-override fragment makes
    Twilio retry up to 5 times on any failure. Twilio does not send or sign the fragment."""


class Reply(Settings):
    """SPEC §8: the answer to an incoming message. `text` for any message, `keywords` by its first word."""

    text: str | None = None
    keywords: dict[str, str] = Field(default_factory=dict)

    @field_validator("keywords")
    @classmethod
    def _one_word_each(cls, keywords: dict[str, str]) -> dict[str, str]:
        words = {}
        for word, text in keywords.items():
            if not word.strip() or len(word.split()) != 1:
                raise ValueError(f"a keyword is one word, not {word!r}")
            if word.strip().upper() in STOP_WORDS:
                raise ValueError(f"{word} is an opt-out word: Twilio answers it, the gateway never does")
            words[word.strip().upper()] = text
        return words

    def text_for(self, body: str | None) -> str | None:
        """The reply to this message text: None for an opt-out word (and when nothing is configured)."""
        words = (body or "").split()
        first = words[0].upper() if words else ""
        if first in STOP_WORDS:
            return None
        return self.keywords.get(first, self.text) or None


class TwilioSettings(Settings):
    auth_token: Secrets
    # SharedKey signing (Webhooks API, public beta): {sharedKeyId: secret}.
    shared_keys: dict[str, str] = Field(default_factory=dict)
    reply: Reply | None = None


class Twilio:
    key: ClassVar[str] = "twilio"
    name: ClassVar[str] = "twilio"
    ack: ClassVar[tuple[bytes, str]] = (ACK, "text/xml")
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")
    media_types: ClassVar[frozenset[str]] = frozenset({FORM, JSON})
    signature_headers: ClassVar[tuple[str, ...]] = ("x-twilio-signature", "x-twilio-webhooks-signature-settings")
    Settings: ClassVar[type[BaseSettings]] = TwilioSettings
    aliases: ClassVar[dict[str, str]] = {}
    failure_code: ClassVar[str] = "30003"
    scenarios: ClassVar[dict[str, Scenario]] = {
        "lifecycle": [("queued", 1), ("sending", 1), ("sent", 1), ("delivered", 1)],
        "out-of-order": [("delivered", 1), ("sent", 1)],
        "duplicate": [("delivered", 3)],
        "failure": [("sent", 1), ("undelivered", 1)],
        # Failures of other reason categories (README, Why it failed), each with its own code.
        "opted-out": [("queued", 1), ("failed", 1, "21610")],
        "invalid-number": [("sent", 1), ("undelivered", 1, "30006")],
        "spam-filtered": [("sent", 1), ("undelivered", 1, "30007")],
        "sender-rejected": [("queued", 1), ("failed", 1, "30034")],
        # An incoming message, then the statuses of the reply it got (a new message: simulate
        # gives it a new id after `received`), sent where <Message action> points: this endpoint.
        "conversation": [("received", 1), ("queued", 1), ("sent", 1), ("delivered", 1)],
    }

    def __init__(self, endpoint: str, settings: TwilioSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self._validators = tuple(RequestValidator(token) for token in settings.auth_token)
        self._shared_keys = {key: RequestValidator(secret) for key, secret in settings.shared_keys.items()}

    def verify(self, inbound: Inbound) -> Fields:
        signature = inbound.headers.get("x-twilio-signature")
        if not signature:
            raise InvalidSignature("missing X-Twilio-Signature header")
        validators, algorithm = self._signers(inbound.headers.get("x-twilio-webhooks-signature-settings"))
        signed, fields = _signed_params(inbound)
        if not _signed_by(validators, inbound.url, signed, signature, algorithm):
            raise InvalidSignature(
                f"signature does not match {inbound.url} (check server.public_url and the auth token)"
            )
        return fields

    def _signers(self, settings_header: str | None) -> tuple[tuple[RequestValidator, ...], str]:
        if settings_header is None:
            return self._validators, HMAC_SHA1
        key_id = ""
        for part in settings_header.split(","):
            name, _, value = part.partition("=")
            if name.strip() == "key":
                key_id = value.strip()
        validator = self._shared_keys.get(key_id)
        if validator is None:
            raise InvalidSignature("the request is signed with a SharedKey that is not in shared_keys")
        algorithm = get_signature_algorithm(settings_header).upper()
        if algorithm not in (HMAC_SHA1, HMAC_SHA256):
            raise InvalidSignature("unsupported signature algorithm in X-Twilio-Webhooks-Signature-Settings")
        return (validator,), algorithm

    def explain(self, inbound: Inbound, others: Sequence[Any]) -> list[str]:
        """Tries the URL variants a proxy or a pasted URL produces (scheme, host, port, trailing
        slash, query) with every Twilio token in the config, exactly (no port guessing of the SDK)."""
        signature = inbound.headers.get("x-twilio-signature")
        if not signature:
            return ["It has no X-Twilio-Signature header: Twilio signs every webhook, so it did not come from "
                    "Twilio, or a proxy in front of the gateway removed the header. No config change makes it verify."]
        settings_header = inbound.headers.get("x-twilio-webhooks-signature-settings")
        endpoints: list[Twilio] = [self, *(o for o in others if isinstance(o, Twilio))]
        if settings_header is None:
            algorithm = HMAC_SHA1
            signers = [(_token_label(e, i), e, v) for e in endpoints for i, v in enumerate(e._validators)]
        else:
            key_id = next((value.strip() for name, _, value in (p.partition("=") for p in settings_header.split(","))
                           if name.strip() == "key"), "")
            algorithm = get_signature_algorithm(settings_header).upper()
            signers = [(f"the shared key {key_id} of endpoint {e.endpoint}", e, e._shared_keys[key_id])
                       for e in endpoints if key_id in e._shared_keys]
            if not signers:
                return [f"It is signed with the SharedKey {key_id!r}, which no endpoint's shared_keys holds: add "
                        f"it to shared_keys of endpoint {self.endpoint}."]
            if algorithm not in DIGESTS:
                return [f"It names the signature algorithm {algorithm}, which Twilio does not use: "
                        "it is not from Twilio."]
        try:
            signed, _ = _signed_params(inbound)
        except GatewayError as exc:
            return [f"Its body cannot be read the way Twilio signs it: {exc}."]
        params: Any = _MultiValues.of(signed) if isinstance(signed, list) else {}
        variants = _url_variants(inbound)
        for url in variants:
            for label, owner, validator in signers:
                if validator.compute_signature(url, params, algorithm) != signature:
                    continue
                return self._found(inbound, url, label, owner)
        return [f"None of the {len(variants)} URL variants tried (http and https, the hosts the request named, with "
                f"and without a port and a trailing slash) verifies with any of the {len(signers)} Twilio tokens in "
                f"the config: the request was signed with a token that is not there. If the account's Auth Token was "
                f"rotated, or the callbacks come from another account or subaccount, add its current token to "
                f"auth_token of endpoint {self.endpoint} (a list keeps the old one valid while you switch)."]

    def _found(self, inbound: Inbound, url: str, label: str, owner: Twilio) -> list[str]:
        findings = []
        checked, signed = urlsplit(inbound.url), urlsplit(url)
        if owner is not self:
            findings.append(f"It is signed with {label}: that account's callbacks are sent to endpoint "
                            f"{self.endpoint}'s URL. Point them at endpoint {owner.endpoint}'s URL (status-gateway "
                            f"urls), or add that token to auth_token of endpoint {self.endpoint}.")
        elif label.startswith("the shared key") or len(self._validators) > 1:
            findings.append(f"It is signed with {label}.")
        if (checked.scheme, checked.netloc) != (signed.scheme, signed.netloc):
            findings.append(f"Twilio signed it for {url}, but the gateway checked {inbound.url}: set "
                            f"server.public_url to {signed.scheme}://{signed.netloc} (a proxy in front of the gateway "
                            f"changes the scheme, host or port it sees).")
        if checked.path != signed.path:
            findings.append(f"Twilio calls the path {signed.path}, not the endpoint's {checked.path} (a trailing slash "
                            f"changes the signature): set path: {signed.path} on endpoint {self.endpoint}, or set the "
                            f"URL at Twilio to exactly what `status-gateway urls` prints.")
        if checked.query != signed.query:
            findings.append(f"Twilio signed it for the query {signed.query or '(none)'}, not the "
                            f"{checked.query or '(none)'} that arrived: something between Twilio and the gateway "
                            f"changed the query string.")
        if "bodySHA256=" in signed.query:
            wanted = dict(parse_qsl(signed.query)).get("bodySHA256", "")
            if hashlib.sha256(inbound.body).hexdigest() != wanted:
                findings.append("The URL verifies, but the body is not the one Twilio signed (bodySHA256 differs): "
                                "something on the way changed it. It cannot be replayed.")
        return findings or [f"It verifies for {url} with {label}."]

    def parse(self, fields: Fields, inbound: Inbound) -> Parsed:
        message_id = _first(fields, "MessageSid") or _first(fields, "SmsSid")
        word = _first(fields, "MessageStatus") or _first(fields, "SmsStatus")
        if not message_id or not word:
            raise Malformed("a Twilio status callback needs MessageSid and MessageStatus")
        if word in NOT_A_STATUS:
            return None
        if word == RECEIVED:
            return self._incoming(fields, message_id, inbound)
        error_code = _first(fields, "ErrorCode") or None
        to, sender = _first(fields, "To"), _first(fields, "From")
        status = STATUSES.get(word.lower(), Status.UNKNOWN)
        said = _first(fields, "ErrorMessage") or _first(fields, "ChannelStatusMessage")
        received_at = utc_iso(inbound.received_at)
        return StatusEvent(
            provider=self.name,
            endpoint=self.endpoint,
            message_id=message_id,
            status=status,
            provider_status=word,
            error_code=error_code,
            error_message=said or described(REASONS, error_code),
            to=to,
            sender=sender,
            channel=_channel(fields, message_id, to, sender),
            account=_first(fields, "AccountSid"),
            # The carrier's time names no zone: read as UTC, never later than its arrival (README).
            occurred_at=carrier_time(_first(fields, "RawDlrDoneDate"), not_after=received_at),
            received_at=received_at,
            raw=dict(fields),
            reason=reason_from(REASONS, status, error_code, said, FALLBACKS),
        )

    def _incoming(self, fields: Fields, message_id: str, inbound: Inbound) -> StatusEvent:
        to, sender = _first(fields, "To"), _first(fields, "From")
        count = _first(fields, "NumMedia") or "0"
        if not count.isdigit():
            raise Malformed("NumMedia of an incoming message is not a number")
        media = []
        for index in range(int(count)):  # zero-based: MediaUrl0 …
            url = _first(fields, f"MediaUrl{index}")
            if not url:
                raise Malformed(f"an incoming message with NumMedia={count} has no MediaUrl{index}")
            media.append(Media(url, _first(fields, f"MediaContentType{index}")))
        return StatusEvent(
            provider=self.name, endpoint=self.endpoint, message_id=message_id,
            status=Status.RECEIVED, provider_status=RECEIVED,
            to=to, sender=sender, channel=_channel(fields, message_id, to, sender),
            account=_first(fields, "AccountSid"), received_at=utc_iso(inbound.received_at),
            raw=dict(fields), direction="inbound", text=_first(fields, "Body"), media=tuple(media),
        )

    @staticmethod
    def wrote(event: StatusEvent) -> bool:
        return True

    @staticmethod
    def reason(event: StatusEvent) -> Reason | None:
        return reason_from(REASONS, event.status, event.error_code, event.error_message, FALLBACKS)

    def join(self, parts: Sequence[Fragment]) -> StatusEvent:
        raise NotImplementedError("Twilio sends a multi-part SMS whole")

    def answer(self, event: StatusEvent, inbound: Inbound) -> tuple[bytes, str] | None:
        """TwiML for an incoming message when `reply:` says so: <Message> with `action` and
        `statusCallback` both this endpoint's URL (Twilio's docs advise both), so the reply's own
        statuses come back here, verified and stored. None: the empty <Response/>."""
        reply = self.settings.reply
        if reply is None or event.status is not Status.RECEIVED or event.raw.get("OptOutType"):
            return None  # with OptOutType, Twilio has already answered the opt-out word itself
        text = reply.text_for(event.text)
        if text is None:
            return None
        url = inbound.url.partition("?")[0]
        response = MessagingResponse()
        response.message(text, action=url, method="POST", status_callback=url)
        return response.to_xml(xml_declaration=True).encode(), "text/xml"

    @staticmethod
    def setup(url: str) -> str:
        return SETUP.format(url=url, fragment=RETRY_FRAGMENT)

    @staticmethod
    def new_message_id() -> str:
        return "SM" + uuid.uuid4().hex

    def sample(self, *, url: str, word: str, message_id: str, account_seed: str, now: datetime,
               error_code: str | None = None) -> SampleRequest:
        return self.sample_request(url=url, auth_token=self.settings.auth_token[0], message_id=message_id,
                                   status=word, account="AC" + account_seed[:32], now=now, error_code=error_code)

    @staticmethod
    def sample_request(
        *, url: str, auth_token: str, message_id: str, status: str, account: str,
        now: datetime, error_code: str | None = None, to: str = "+15005550006", sender: str = "+15005550001",
    ) -> SampleRequest:
        """A status callback (or, for `received`, an incoming message) as Twilio sends it, signed
        with the SDK (used by `simulate`)."""
        params = {
            "AccountSid": account, "ApiVersion": "2010-04-01",
            "MessageSid": message_id, "SmsSid": message_id,
            "MessageStatus": status, "SmsStatus": status, "To": to, "From": sender,
        }
        if status == RECEIVED:  # "A MESSAGE COMES IN": SmsStatus only, from the user to the number
            del params["MessageStatus"]
            params.update(To=sender, From=to, Body="Hi, is my order on its way?", NumMedia="0", NumSegments="1")
        if error_code:
            params["ErrorCode"] = error_code
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = now.astimezone(timezone.utc).strftime("%y%m%d%H%M")
        signature = RequestValidator(auth_token).compute_signature(url, params)
        return SampleRequest(
            method="POST", url=url,
            headers={"Content-Type": f"{FORM}; charset=utf-8", "X-Twilio-Signature": signature},
            body=urlencode(params).encode(),
        )


def _token_label(endpoint: Twilio, index: int) -> str:
    if len(endpoint._validators) == 1:
        return f"the auth_token of endpoint {endpoint.endpoint}"
    return f"auth_token #{index + 1} of endpoint {endpoint.endpoint}"


def _url_variants(inbound: Inbound) -> list[str]:
    """The checked URL first, then each URL a proxy, a port or a pasted slash could have made."""
    url = urlsplit(inbound.url)
    hosts, named_ports = [url.hostname or ""], [url.port]
    for header in ("host", "x-forwarded-host"):
        value = inbound.headers.get(header, "").split(",")[0].strip()
        named = urlsplit(f"//{value}") if value else None
        if named and named.hostname and named.hostname not in hosts:
            hosts.append(named.hostname)
        if named and named.hostname:
            try:
                named_ports.append(named.port)
            except ValueError:  # not a port: nothing to try
                pass
    paths = [url.path, url.path.rstrip("/") if url.path.endswith("/") and url.path != "/" else url.path + "/"]
    queries = [url.query, ""] if url.query else [""]
    variants = [inbound.url]
    for scheme in ("https", "http"):
        ports = [None, *named_ports, 443 if scheme == "https" else 80]
        for host in hosts:
            for port in dict.fromkeys(ports):
                netloc = host if port is None else f"{host}:{port}"
                for path in paths:
                    for query in queries:
                        candidate = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
                        if candidate not in variants:
                            variants.append(candidate)
    return variants


def _signed_by(
    validators: tuple[RequestValidator, ...], url: str, signed: Any, signature: str, algorithm: str,
) -> bool:
    """Whether any configured token (rotation: old and new both sign for a while) made `signature`.

    A form POST, nearly every callback, is first checked against the exact URL in one pass: the
    string the SDK's compute_signature builds (URL, then each distinct key+value pair in sorted
    order), one HMAC per token, which costs a fifth of RequestValidator.validate. Anything that does
    not match there (the URL with its port added or removed, bodySHA256, GET) goes to the SDK's
    validate, which decides. tests/providers/test_sdk_equivalence.py holds the two to the same answers.
    """
    if isinstance(signed, list):
        text = (url + "".join(key + value for key, value in sorted(set(signed)))).encode()
        expected = signature.encode()
        digest = DIGESTS[algorithm]
        for validator in validators:
            if hmac.compare_digest(base64.b64encode(hmac.new(validator.token, text, digest).digest()), expected):
                return True
        signed = _MultiValues.of(signed)
    return any(validator.validate(url, signed, signature, algorithm) for validator in validators)


class _MultiValues(dict[str, list[str]]):
    """Form pairs as RequestValidator reads a repeated key (its `getall`), with no web framework's type."""

    @classmethod
    def of(cls, pairs: list[tuple[str, str]]) -> _MultiValues:
        values = cls()
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        return values

    def getall(self, key: str) -> list[str]:
        return self[key]


def _signed_params(inbound: Inbound) -> tuple[Any, dict[str, Any]]:
    """What the signature covers (for RequestValidator) and the fields it authenticates."""
    if inbound.method == "GET":
        # The parameters are in the query string, which is already part of the signed URL.
        return {}, _pairs_to_fields(decode_pairs(inbound.query.encode("latin-1"), "query string"))
    body_sha256 = "bodySHA256=" in inbound.query
    if inbound.media_type == JSON:
        if not body_sha256:
            raise InvalidSignature("a JSON body must be signed with ?bodySHA256= in the URL")
        text = decode_text(inbound.body)
        data = decode_json_object(text)
        # A str (never a parsed dict) makes RequestValidator check bodySHA256 against the raw body.
        return text, {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in data.items()}
    pairs = decode_pairs(inbound.body, "form body")
    if body_sha256:
        return decode_text(inbound.body), _pairs_to_fields(pairs)
    # The pairs keep repeated keys and blank values: both are part of the signed string.
    return pairs, _pairs_to_fields(pairs)


def _pairs_to_fields(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[key] = value
    return fields


def _first(fields: Fields, key: str) -> str | None:
    value = fields.get(key)
    if isinstance(value, list):
        value = value[0]
    return value if isinstance(value, str) else None


def _channel(fields: Fields, message_id: str, to: str | None, sender: str | None) -> str:
    prefix = _first(fields, "ChannelPrefix")
    if prefix:
        return prefix.lower()
    for address in (to, sender):
        if address and ":" in address:  # "whatsapp:+14155238886", "messenger:123", "rcs:…"
            return address.partition(":")[0].lower()
    return "mms" if message_id.startswith("MM") else "sms"
