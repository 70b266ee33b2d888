"""`status-gateway report`: /v1/stats' figures as a table, the vendors side by side (SPEC §10)."""

from __future__ import annotations

from typing import Any

import click
import orjson

from gateway.cli import CONFIG_OPTION, _fail, _load, main
from gateway.cli_forwarding import _run_on_store
from gateway.clock import system_clock
from gateway.model import utc_iso
from gateway.stats import Window, moment
from providers import EVENT_PROVIDERS, PROVIDERS

COLUMNS = ("messages", "delivered", "failed", "rate", "p50", "p90", "p99", "top reason")


@main.command()
@CONFIG_OPTION
@click.option("--since", default="7d", show_default=True, help="A span back from now (24h, 7d) or an ISO time.")
@click.option("--until", default=None, help="A span back from now or an ISO time (default: now).")
@click.option("--by", type=click.Choice(["provider", "country", "endpoint", "day"]), default="provider",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON, as /v1/stats answers, per provider.")
def report(config_path: str | None, since: str, until: str | None, by: str, as_json: bool) -> None:
    """Compare the vendors: delivery rate, time to deliver and failure reasons of the messages first
    seen in the window."""
    config = _load(config_path, dev_secrets=True)
    now = system_clock()
    try:
        window = Window(moment(since, now), moment(until, now))
    except ValueError:
        _fail("--since and --until are spans (24h, 7d) or ISO 8601 times")

    async def figures(store: Any) -> list[tuple[str, dict[str, Any]]]:
        if by == "provider":
            return [(group["key"], group) for group in await store.stats(window=window, by=by)]
        rows = []  # each group once per vendor, next to each other
        for provider in EVENT_PROVIDERS:
            rows += [(provider, group) for group in await store.stats(window=window, by=by, provider=provider)]
        return sorted(rows, key=lambda row: (row[1]["key"], row[0]))

    rows = _run_on_store(config, figures)
    if as_json:
        click.echo(orjson.dumps({
            "since": utc_iso(window.since) if window.since else None,
            "until": utc_iso(window.until) if window.until else None, "by": by,
            "groups": [{"provider": provider, **group} for provider, group in rows],
        }, option=orjson.OPT_INDENT_2).decode())
        return
    span = f"since {utc_iso(window.since) if window.since else 'the first event'}"
    if not rows:
        click.echo(f"No messages {span}: try `status-gateway simulate {next(iter(PROVIDERS))} --scenario lifecycle`.")
        return
    table = [(("provider",) if by == "provider" else (by, "provider")) + COLUMNS]
    for provider, group in rows:
        table.append(((provider,) if by == "provider" else (group["key"], provider)) + _cells(group))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    click.echo(f"Messages first seen {span}, by {by}:\n")
    for index, row in enumerate(table):
        click.echo("  ".join(cell.ljust(width) if i < len(row) - len(COLUMNS) or i == len(row) - 1
                             else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
                   .rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))


def _cells(group: dict[str, Any]) -> tuple[str, ...]:
    statuses = group["statuses"]
    delivered = statuses.get("delivered", 0) + statuses.get("read", 0)
    failed = sum(statuses.get(s, 0) for s in ("undelivered", "failed", "rejected", "expired"))
    rate = group["delivery_rate"]
    times = group["time_to_deliver"]
    reasons = group["reasons"]
    return (str(group["messages"]), str(delivered), str(failed), "-" if rate is None else f"{rate:.1%}",
            *(_seconds(times[p]) for p in ("p50", "p90", "p99")),
            f"{reasons[0]['category']} ({reasons[0]['messages']})" if reasons else "-")


def _seconds(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value}s"
    return f"{value / 60:.1f}m" if value < 7200 else f"{value / 3600:.1f}h"
