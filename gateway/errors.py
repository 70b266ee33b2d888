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
    │   ├── NotFound                  not_found               404
    │   ├── MethodNotAllowed          method_not_allowed      405   + Allow
    │   └── HTTPRefusal               http_error              4xx   (any other the framework answers)
    └── Unavailable                                           503 + Retry-After
        ├── SinkUnavailable           sink_unavailable
        └── Unsigned                  unsigned_callback       (Vonage: a 5xx makes it retry signed)

Messages say what to fix and never carry a secret, a token or a signature. `refusal()` is the one
place an exception becomes an HTTP answer, for the callback fast path and the Starlette routes alike.
"""

from __future__ import annotations

import orjson

Headers = list[tuple[bytes, bytes]]


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


class MethodNotAllowed(Rejected):
    code = "method_not_allowed"
    status = 405

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Unavailable(GatewayError):
    """Answered 503 with Retry-After: the provider retries, so a real callback is not lost."""

    status = 503
    retry_after = 5


class SinkUnavailable(Unavailable):
    code = "sink_unavailable"


class Unsigned(Unavailable):
    code = "unsigned_callback"


class HTTPRefusal(Rejected):
    """Any other 4xx the framework itself answers, under its own status."""

    code = "http_error"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def from_http(status: int, detail: str, allow: str) -> GatewayError:
    """The framework's own refusals (no route, wrong method) as ours, so one renderer answers them all."""
    if status == 404:
        return NotFound(detail)
    if status == 405:
        return MethodNotAllowed(detail, tuple(method.strip() for method in allow.split(",") if method.strip()))
    return HTTPRefusal(detail, status)


def refusal(exc: GatewayError) -> tuple[int, Headers, bytes]:
    """(status, headers, body) of the small JSON answer for a refused request."""
    body = orjson.dumps({"error": exc.code, "detail": str(exc)})
    headers: Headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(exc, Unavailable):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    elif isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", ", ".join(exc.allowed).encode()))
    return exc.status, headers, body
