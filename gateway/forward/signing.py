"""The Standard Webhooks signature (standardwebhooks.com): a few lines of hmac, no library.

    webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")> …

one `v1,` entry per secret, space-separated, so a receiver still holding the old secret of a
rotation verifies as well as one that already has the new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


def signature(webhook_id: str, timestamp: int, body: bytes, secrets: Sequence[bytes]) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in secrets)


def headers(webhook_id: str, timestamp: int, body: bytes, secrets: Sequence[bytes]) -> dict[str, str]:
    """The request's headers: webhook-id is the event id, the same on every attempt and redelivery."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(webhook_id, timestamp, body, secrets),
    }
