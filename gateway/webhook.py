"""The callback path, top to bottom: size and media checks → Inbound → verify → parse → sinks → ack."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import metrics
from gateway.config import ServerConfig
from gateway.errors import (
    GatewayError,
    InvalidSignature,
    InvalidToken,
    Malformed,
    TooLarge,
    UnsupportedMediaType,
)
from gateway.model import Status, StatusEvent
from gateway.sinks import Sink
from providers.base import Inbound, Provider

log = logging.getLogger("gateway.access")
security_log = logging.getLogger("gateway.security")


async def receive_callback(
    request: Request, *, endpoint: str, path: str, provider: Provider,
    sinks: Sequence[Sink], server: ServerConfig,
) -> Response:
    started = time.perf_counter()
    outcome, http_status, event = "accepted", 200, None
    try:
        inbound = await read_inbound(request, path, provider, server)
        fields = provider.verify(inbound)
        metrics.LAST_VERIFIED.labels(endpoint).set(time.time())
        event = provider.parse(fields, inbound)
        if event is None:
            outcome = "not_a_status"
        elif not await deliver(event, sinks):
            outcome = "duplicate"
        body, media_type = provider.ack
        return Response(body, media_type=media_type)
    except GatewayError as exc:
        outcome, http_status = exc.code, exc.status
        if isinstance(exc, InvalidSignature | InvalidToken):
            # Says which check failed and the URL checked (never a secret), so a proxy mix-up is visible.
            security_log.warning("%s refused on endpoint %s: %s", exc.code, endpoint, exc)
        raise
    finally:
        metrics.CALLBACKS.labels(provider.name, endpoint, outcome).inc()
        if event is not None and outcome == "accepted":
            metrics.EVENTS.labels(provider.name, event.status.value).inc()
            if event.status is Status.UNKNOWN:
                metrics.UNKNOWN_STATUSES.labels(provider.name, event.provider_status[:64]).inc()
        log.info("callback", extra={
            "provider": provider.name, "endpoint": endpoint, "outcome": outcome,
            "message_id": event.message_id if event else None, "status": event.status.value if event else None,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3), "http_status": http_status,
        })


async def deliver(event: StatusEvent, sinks: Sequence[Sink]) -> bool:
    """Hand the event to every sink in config order; False if a store already had its id."""
    new = True
    for sink in sinks:
        started = time.perf_counter()
        new = await sink.write(event) and new
        metrics.SINK_WRITE.labels(type(sink).__name__).observe(time.perf_counter() - started)
    return new


async def read_inbound(request: Request, path: str, provider: Provider, server: ServerConfig) -> Inbound:
    scope = request.scope
    headers = _headers(scope["headers"])
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Malformed("the Content-Length header is not a number")
        if int(length) > server.max_body_bytes:
            raise TooLarge(f"the body is larger than {server.max_body_bytes} bytes")
    if scope["method"] == "POST":
        media_type, _, parameters = headers.get("content-type", "").partition(";")
        media_type = media_type.strip().lower()
        if media_type not in provider.media_types:
            raise UnsupportedMediaType(
                f"{provider.name} callbacks are {' or '.join(sorted(provider.media_types))}, not {media_type or 'untyped'}"
            )
        charset = parameters.partition("charset=")[2].split(";")[0].strip().strip('"').lower()
        if charset and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("only UTF-8 bodies are accepted")
    body = await _read_body(request, server.max_body_bytes)
    query = scope["query_string"].decode("latin-1")
    return Inbound(
        method=scope["method"],
        url=_signed_url(scope, headers, path, query, server),
        headers=headers,
        body=body,
        received_at=datetime.now(timezone.utc),
        query=query,
    )


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    # A repeated header is joined (RFC 9110 §5.3): two signatures then match nothing, as they should.
    headers: dict[str, str] = {}
    for key, value in raw:
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return headers


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _signed_url(scope: Any, headers: dict[str, str], path: str, query: str, server: ServerConfig) -> str:
    """SPEC §5: public_url + endpoint path + raw query; else the request's own URL."""
    base = server.public_url
    if base is None:
        scheme, host = scope["scheme"], headers.get("host", "")
        client = scope.get("client")
        if client and client[0] in server.trusted_proxies:
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
            host = headers.get("x-forwarded-host", host).split(",")[0].strip()
        base = f"{scheme}://{host}"
    return f"{base}{path}?{query}" if query else f"{base}{path}"
