"""What the SQL stores share: the WHERE clauses of `recent`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.model import Status, utc_iso


def filters(
    provider: str | None, status: Status | None, since: datetime | None, after_seq: int | None, mark: str,
) -> tuple[list[str], list[Any]]:
    """WHERE clauses shared by the SQL stores; `mark` makes the placeholders (? or $n)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("provider", "=", provider),
        ("status", "=", status.value if status else None),
        ("received_at", ">=", utc_iso(since) if since else None),
        ("seq", ">", after_seq),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{column} {op} {mark.replace('#', str(len(params)))}")
    return clauses, params
