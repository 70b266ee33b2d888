"""The one exception tree; each class carries its refusal code and HTTP status.

    GatewayError                      code                    HTTP
    ├── ConfigError                   (start-up / CLI exit 1; never reaches HTTP)
    ├── Rejected
    │   ├── InvalidSignature          invalid_signature       403   (Twilio)
    │   ├── InvalidToken              invalid_token           401   (Vonage)
    │   ├── Malformed                 malformed               400
    │   ├── TooLarge                  too_large               413
    │   ├── UnsupportedMediaType      unsupported_media_type  415
    │   ├── Unauthorized              unauthorized            401   (/v1 bearer token)
    │   └── NotFound                  not_found               404
    └── Unavailable                                           503 + Retry-After
        ├── SinkUnavailable           sink_unavailable
        └── Unsigned                  unsigned_callback       (Vonage: a 5xx makes it retry signed)

Messages say what to fix and never carry a secret, a token or a signature.
"""

from __future__ import annotations


class GatewayError(Exception):
    code: str = "error"
    status: int = 500


class ConfigError(GatewayError):
    """A configuration problem; the message names the key and the endpoint."""


class Rejected(GatewayError):
    """The request was refused; providers do not retry a 4xx, so nothing is lost that was real."""


class InvalidSignature(Rejected):
    code = "invalid_signature"
    status = 403


class InvalidToken(Rejected):
    code = "invalid_token"
    status = 401


class Malformed(Rejected):
    code = "malformed"
    status = 400


class TooLarge(Rejected):
    code = "too_large"
    status = 413


class UnsupportedMediaType(Rejected):
    code = "unsupported_media_type"
    status = 415


class Unauthorized(Rejected):
    code = "unauthorized"
    status = 401


class NotFound(Rejected):
    code = "not_found"
    status = 404


class Unavailable(GatewayError):
    """Answered 503 with Retry-After: the provider retries, so a real callback is not lost."""

    status = 503
    retry_after = 5


class SinkUnavailable(Unavailable):
    code = "sink_unavailable"


class Unsigned(Unavailable):
    code = "unsigned_callback"
