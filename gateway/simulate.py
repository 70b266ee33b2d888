"""`status-gateway simulate`: realistic, correctly signed callbacks sent to a running gateway."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from gateway.clock import system_clock
from gateway.config import Config, Endpoint
from gateway.errors import ConfigError
from providers.base import SampleRequest
from providers.twilio import Twilio
from providers.vonage import Vonage
from providers.vonage_sms import VonageSMS

# A normalized word typed for a provider that says it differently ("vonage sent" → "submitted").
ALIASES = {"vonage": {"sent": "submitted", "undelivered": "undeliverable", "failed": "rejected"},
           "vonage-sms": {"sent": "accepted", "sending": "buffered", "undelivered": "failed"}}
FAILURE_CODES = {"twilio": "30003", "vonage": "1250", "vonage-sms": "2"}
FAILURE_WORDS = {"failed", "undelivered", "undeliverable", "rejected"}

# scenario → (provider word, sent how many times) per provider, for one message.
SCENARIOS: dict[str, dict[str, list[tuple[str, int]]]] = {
    "lifecycle": {"twilio": [("queued", 1), ("sending", 1), ("sent", 1), ("delivered", 1)],
                  "vonage": [("submitted", 1), ("delivered", 1)],
                  "vonage-sms": [("buffered", 1), ("accepted", 1), ("delivered", 1)]},
    "out-of-order": {"twilio": [("delivered", 1), ("sent", 1)], "vonage": [("delivered", 1), ("submitted", 1)],
                     "vonage-sms": [("delivered", 1), ("accepted", 1)]},
    "duplicate": {"twilio": [("delivered", 3)], "vonage": [("delivered", 3)], "vonage-sms": [("delivered", 3)]},
    "failure": {"twilio": [("sent", 1), ("undelivered", 1)], "vonage": [("submitted", 1), ("rejected", 1)],
                "vonage-sms": [("accepted", 1), ("failed", 1)]},
}


@dataclass(frozen=True, slots=True)
class Target:
    endpoint: Endpoint
    send_url: str  # where the request goes
    signed_url: str  # what the provider would have signed (SPEC §5)


def target(config: Config, provider: str, endpoint_name: str | None, url: str | None) -> Target:
    candidates = [e for e in config.endpoints if e.provider == provider]
    if endpoint_name:
        candidates = [e for e in candidates if e.name == endpoint_name]
    if not candidates:
        raise ConfigError(f"no {provider} endpoint{' named ' + endpoint_name if endpoint_name else ''} in the config")
    endpoint = candidates[0]
    host = config.server.host if config.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    send_url = url or f"http://{host}:{config.server.port}{endpoint.path}"
    base = config.server.public_url
    return Target(endpoint, send_url, f"{base}{endpoint.path}" if base else send_url)


def build(target: Target, word: str, message_id: str, error_code: str | None = None) -> SampleRequest:
    settings = target.endpoint.settings
    provider = target.endpoint.provider
    word = ALIASES.get(provider, {}).get(word, word)
    if error_code is None and word in FAILURE_WORDS:
        error_code = FAILURE_CODES[provider]
    # A stable, plausible account id per endpoint, so every simulated callback of it agrees.
    digest = hashlib.sha256(target.endpoint.name.encode()).hexdigest()
    now = system_clock()  # the gateway it is sent to reads the wall clock too
    request: SampleRequest
    if provider == "twilio":
        request = Twilio.sample_request(
            url=target.signed_url, auth_token=settings.auth_token[0],  # type: ignore[attr-defined]
            message_id=message_id, status=word, account="AC" + digest[:32], error_code=error_code, now=now,
        )
    elif provider == "vonage":
        request = Vonage.sample_request(
            url=target.signed_url, signature_secret=settings.signature_secret[0],  # type: ignore[attr-defined]
            message_id=message_id, status=word, api_key=digest[:8], error_code=error_code, now=now,
        )
    else:
        request = VonageSMS.sample_request(
            url=target.signed_url, signature_secret=settings.signature_secret[0],  # type: ignore[attr-defined]
            signature_method=settings.signature_method,  # type: ignore[attr-defined]
            message_id=message_id, status=word, api_key=digest[:8], error_code=error_code, now=now,
        )
    return SampleRequest(request.method, target.send_url, request.headers, request.body)


def new_message_id(provider: str) -> str:
    if provider == "twilio":
        return "SM" + uuid.uuid4().hex
    if provider == "vonage-sms":
        return uuid.uuid4().hex[:16].upper()  # an SMS API messageId: 16 hex digits, one per SMS part
    return str(uuid.uuid4())


def plan(provider: str, scenario: str | None, word: str | None) -> Iterator[tuple[str, int]]:
    if scenario:
        yield from SCENARIOS[scenario][provider]
    elif word:
        yield word, 1


def send(client: httpx.Client, request: SampleRequest) -> httpx.Response:
    return client.request(request.method, request.url, headers=request.headers, content=request.body)
