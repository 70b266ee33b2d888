"""Every Prometheus metric, defined once; /metrics renders them (all workers' in multiprocess mode)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

CALLBACKS = Counter(
    "gateway_callbacks_total", "Provider callbacks by outcome (accepted, duplicate, invalid_signature, …)",
    ["provider", "endpoint", "outcome"],
)
EVENTS = Counter("gateway_events_total", "New events stored, by normalized status", ["provider", "status"])
UNKNOWN_STATUSES = Counter(
    "gateway_unknown_statuses_total", "Callbacks whose provider status word is not in the status table",
    ["provider", "provider_status"],
)
FAILURES = Counter(
    "gateway_failures_total", "New failure events stored, by provider and reason category (README, Why it failed)",
    ["provider", "category"],
)
UNMAPPED_CODES = Counter(
    "gateway_unmapped_error_codes_total", "Failures whose error code is in no table of their provider (reason unknown)",
    ["provider", "code"],
)
UNREAD = Counter(
    "gateway_unread_callbacks_total", "Genuine callbacks of a kind no parser reads yet, kept whole (GET /v1/unread)",
    ["provider", "endpoint"],
)
QUARANTINED = Counter(
    "gateway_refused_callbacks_total", "Callbacks refused for their signature or token, kept in the quarantine "
    "within its bounds (status-gateway refused)", ["endpoint", "code"],
)
SINK_WRITE = Histogram(
    # Every sink takes the event at once; each is observed when its own write is done. Labelled by
    # place and type ("sinks.1:sqlite"): two sinks of one type are two series.
    "gateway_sink_write_seconds", "Seconds from a verified callback until this sink took it (a store: committed it)",
    ["sink"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
FORWARD_ATTEMPTS = Counter(
    "gateway_forward_attempts_total", "Forwarding attempts by subscription and what they left the delivery as "
    "(delivered, retrying, failed, disabled)", ["subscription", "outcome"],
)
FORWARD_LATENCY = Histogram(
    "gateway_forward_latency_seconds", "From receiving a callback until its delivery to a subscription succeeded",
    ["subscription"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
FORWARD_BACKLOG = Gauge(
    "gateway_forward_pending", "Deliveries waiting to be sent (the store's, the same on every replica)",
    multiprocess_mode="max",
)
FORWARD_OLDEST = Gauge(
    "gateway_forward_oldest_pending_seconds", "Age of the oldest delivery still pending", multiprocess_mode="max",
)
LAST_VERIFIED = Gauge(
    "gateway_last_verified_callback_timestamp_seconds",
    "Unix time of the last callback whose signature verified, per endpoint: a silent webhook shows here",
    ["endpoint"], multiprocess_mode="max",
)


async def metrics_endpoint(request: Request) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
