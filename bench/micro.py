"""Micro-benchmark of the hot path's pieces, per call, with timeit (not a test: numbers, no asserts).

    python -m bench.micro

Each adapter's verify+parse runs on a real signed callback (the same shapes bench.run sends), next to
the SDK call it wraps, so a regression in our own code shows as a growing gap between the two.
"""

from __future__ import annotations

import hashlib
import time
import timeit
from collections.abc import Callable
from datetime import datetime, timezone

import jwt
from twilio.request_validator import RequestValidator

from bench.naive import TWILIO_PATH, VONAGE_PATH
from bench.run import TWILIO_TOKEN, VONAGE_SECRET, twilio_requests, vonage_requests
from providers.base import Inbound
from providers.twilio import Twilio, TwilioSettings
from providers.vonage import Vonage, VonageSettings

PORT = 8000


def inbound_from(raw: bytes, path: str) -> Inbound:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode().split("\r\n")[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return Inbound(method="POST", url=f"http://127.0.0.1:{PORT}{path}", headers=headers, body=body,
                   received_at=datetime.now(timezone.utc))


def measure(label: str, call: Callable[[], object], number: int = 20000) -> None:
    best = min(timeit.repeat(call, number=number, repeat=5)) / number
    print(f"{label:<44} {best * 1e6:7.2f} µs")


def main() -> None:
    twilio = Twilio("bench", TwilioSettings(auth_token=(TWILIO_TOKEN,)))
    vonage = Vonage("bench", VonageSettings(signature_secret=(VONAGE_SECRET,), max_token_age=3600))
    t_in = inbound_from(twilio_requests(PORT, 1, "micro").split(b"\0")[0], TWILIO_PATH)
    v_in = inbound_from(vonage_requests(PORT, 1, "micro").split(b"\0")[0], VONAGE_PATH)

    validator = RequestValidator(TWILIO_TOKEN)
    from urllib.parse import parse_qsl
    params = dict(parse_qsl(t_in.body.decode()))
    measure("twilio SDK RequestValidator.validate", lambda: validator.validate(
        t_in.url, params, t_in.headers["x-twilio-signature"]))
    measure("twilio verify", lambda: twilio.verify(t_in))
    fields = twilio.verify(t_in)
    measure("twilio parse (StatusEvent)", lambda: twilio.parse(fields, t_in))
    measure("twilio verify+parse", lambda: twilio.parse(twilio.verify(t_in), t_in))

    token = v_in.headers["authorization"].removeprefix("Bearer ")
    measure("vonage SDK jwt.decode + sha256", lambda: (
        jwt.decode(token, VONAGE_SECRET, algorithms=["HS256"]), hashlib.sha256(v_in.body).hexdigest()))
    measure("vonage verify", lambda: vonage.verify(v_in))
    fields = vonage.verify(v_in)
    measure("vonage parse (StatusEvent)", lambda: vonage.parse(fields, v_in))
    measure("vonage verify+parse", lambda: vonage.parse(vonage.verify(v_in), v_in))
    event = vonage.parse(fields, v_in)
    measure("event.dumps (stored and logged form)", event.dumps)
    print(f"(python {'.'.join(map(str, __import__('sys').version_info[:3]))}, {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
