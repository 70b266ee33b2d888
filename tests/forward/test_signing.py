"""Every signature the gateway makes verifies with the Standard Webhooks reference library, each
rotated secret alone; a changed byte, id or timestamp, or another secret, does not.

(svix's Python verifier is no second opinion: in svix 2.9 `svix.webhooks.Webhook.verify` renames
the svix-* headers and calls this same library.)"""

from __future__ import annotations

import base64
import os
import time

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from gateway.forward.signing import headers
from gateway.forward.settings import webhook_secret

OLD, NEW = ("whsec_" + base64.b64encode(os.urandom(size)).decode() for size in (24, 64))
KEYS = (webhook_secret(OLD), webhook_secret(NEW))


def now() -> int:
    """The verifiers judge webhook-timestamp against their wall clock (5 min tolerance), as a
    receiver does: the gateway signs each attempt with its own time, so the tests do too."""
    return int(time.time())


@given(body=st.binary(min_size=0, max_size=300).map(lambda b: b'{"x": "' + b.hex().encode() + b'"}'),
       webhook_id=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32))
def test_each_rotated_secret_alone_verifies_the_request(body: bytes, webhook_id: str) -> None:
    sent = headers(webhook_id, now(), body, KEYS)
    assert len(sent["webhook-signature"].split(" ")) == 2  # one v1 entry per secret
    for secret in (OLD, NEW):
        assert standardwebhooks.Webhook(secret).verify(body, sent) == {"x": body[7:-2].decode()}


@pytest.mark.parametrize("change", ["body", "id", "timestamp", "secret"])
def test_what_was_not_signed_does_not_verify(change: str) -> None:
    body = b'{"type": "message.status.delivered"}'
    sent = headers("evt1", now(), body, KEYS[:1])
    secret = OLD
    if change == "body":
        body = body.replace(b"delivered", b"failed")
    elif change == "id":
        sent["webhook-id"] = "evt2"
    elif change == "timestamp":
        sent["webhook-timestamp"] = str(int(sent["webhook-timestamp"]) - 1)
    else:
        secret = NEW
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body, sent)
