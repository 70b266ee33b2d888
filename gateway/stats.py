"""The figures of /v1/stats and `status-gateway report`, from the stores' rollups (SPEC §10).

The stores keep, in the write of each event, messages counted by (provider, endpoint, country,
hour first seen, current status, reason) and times to deliver by the same keys and whole seconds
(gateway/sinks/sqlite_db.py, schema 6). A figure reads those rows for its hours: a few thousand
at most, never the events. This module turns them into each group's numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.model import Status, parse_iso

GROUPINGS = ("provider", "endpoint", "country", "day")
# How the stores round a time to deliver, in seconds: below each limit, down to a multiple of its
# step (at most 10 % off; exact below a minute); beyond the last, whole hours. The same in SQLite's
# SQL and PostgreSQL's.
BUCKETS = ((60, 1), (600, 5), (3600, 60), (6 * 3600, 300), (86400, 900))
DELIVERED = frozenset({Status.DELIVERED.value, Status.READ.value})  # read was delivered first
FINALS = frozenset(status.value for status in Status if status.final and status is not Status.RECEIVED)
TOP_REASONS = 5
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Window:
    """The hours a figure covers: messages first seen from `since` to `until`, each rounded down
    to its hour (the rollups' grain); None is open-ended."""

    since: datetime | None = None
    until: datetime | None = None

    def pieces(self) -> list[tuple[str, str, str]]:
        """(grain, first period, last period) to read: the hours of the window's first and last day,
        and the whole days between them from the daily rollups (all time: days only)."""
        first = hour_of(self.since) if self.since else None
        last = hour_of(self.until) if self.until else None
        if first and last and first[:10] == last[:10]:
            return [("hour", first, last)] if first <= last else []
        pieces = []
        days_from, days_to = "", "9999"
        if first:
            pieces.append(("hour", first, first[:10] + "T23"))
            days_from = _day_after(first[:10])
        if last:
            pieces.append(("hour", last[:10] + "T00", last))
            days_to = _day_before(last[:10])
        if days_from <= days_to:
            pieces.append(("day", days_from, days_to))
        return [piece for piece in pieces if piece[1] <= piece[2]]


def _day_after(day: str) -> str:
    return (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")


def _day_before(day: str) -> str:
    return (datetime.fromisoformat(day) - timedelta(days=1)).strftime("%Y-%m-%d")


DURATION = re.compile(r"(\d+)([mhdw])")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def moment(value: str | None, now: datetime) -> datetime | None:
    """An ISO 8601 time ("2026-01-01T00:00:00Z"; no zone is UTC) or a span back from now ("24h",
    "7d", "30m", "2w"); None for none. Raises ValueError for anything else."""
    if not value:
        return None
    span = DURATION.fullmatch(value.strip())
    if span:
        return now - timedelta(seconds=int(span.group(1)) * UNITS[span.group(2)])
    return parse_iso(value.strip())


def hour_of(moment: datetime) -> str:
    """The rollups' hour key, as the stores cut it from received_at: "2026-01-01T09"."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H")


def figures(counts: Iterable[tuple[str, str, str, int]], times: Iterable[tuple[str, int, int]],
            ) -> list[dict[str, Any]]:
    """Each group's figures, biggest first: counts are (group, status, reason, messages) rows,
    times (group, seconds, messages) rows, both summed over the window already."""
    groups: dict[str, dict[str, Any]] = {}
    for group, status, reason, n in counts:
        if n <= 0:
            continue
        data = groups.setdefault(group, {"statuses": {}, "reasons": {}})
        data["statuses"][status] = data["statuses"].get(status, 0) + n
        if reason:
            data["reasons"][reason] = data["reasons"].get(reason, 0) + n
    spans: dict[str, list[tuple[int, int]]] = {}
    for group, seconds, n in times:
        if n > 0:
            spans.setdefault(group, []).append((seconds, n))
    answer = []
    for group, data in groups.items():
        statuses: dict[str, int] = data["statuses"]
        finals = sum(n for status, n in statuses.items() if status in FINALS)
        delivered = sum(n for status, n in statuses.items() if status in DELIVERED)
        reasons = sorted(data["reasons"].items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
        answer.append({
            "key": group,
            "messages": sum(statuses.values()),
            "statuses": dict(sorted(statuses.items())),
            "delivery_rate": round(delivered / finals, 4) if finals else None,
            "reasons": [{"category": category, "messages": n} for category, n in reasons],
            "time_to_deliver": percentiles(spans.get(group, [])),
        })
    return sorted(answer, key=lambda data: (-data["messages"], data["key"]))


def percentiles(spans: list[tuple[int, int]]) -> dict[str, Any]:
    """Nearest-rank p50/p90/p99 in seconds of (seconds, messages) pairs; nulls without any."""
    total = sum(n for _, n in spans)
    result: dict[str, Any] = {"messages": total}
    ordered = sorted(spans)
    for p in PERCENTILES:
        if not total:
            result[f"p{p}"] = None
            continue
        rank, seen = math.ceil(p / 100 * total), 0
        for seconds, n in ordered:
            seen += n
            if seen >= rank:
                result[f"p{p}"] = seconds
                break
    return result
