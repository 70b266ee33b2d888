"""`status-gateway export` (SPEC §12): the stored events for analysis, streamed page by page."""

from __future__ import annotations

import asyncio
import csv
import sys
from typing import Any

import click

from gateway.cli import CONFIG_OPTION, SINCE_HELP, _fail, _load, _store, _time, main
from gateway.clock import system_clock
from gateway.errors import GatewayError
from gateway.model import StatusEvent

PAGE = 2000
CSV_COLUMNS = ("id", "provider", "endpoint", "message_id", "status", "provider_status", "final", "direction",
               "error_code", "reason", "to", "sender", "channel", "account", "occurred_at", "received_at", "text")


def csv_row(event: StatusEvent) -> list[Any]:
    return [event.id, event.provider, event.endpoint, event.message_id, event.status.value, event.provider_status,
            "true" if event.status.final else "false", event.direction, event.error_code or "",
            event.reason.category if event.reason else "", event.to or "", event.sender or "", event.channel or "",
            event.account or "", event.occurred_at or "", event.received_at, event.text or ""]


@main.command()
@CONFIG_OPTION
@click.option("--since", help=SINCE_HELP)
@click.option("--until", help=SINCE_HELP)
@click.option("--format", "form", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
def export(config_path: str | None, since: str | None, until: str | None, form: str) -> None:
    """Write the stored events, oldest first, to stdout: one JSON event per line (as /v1 shows
    them), or CSV with a header. On a terminal, a progress line goes to stderr."""
    config = _load(config_path, dev_secrets=True)
    now = system_clock()
    start, end = _time(since, now), _time(until, now)
    progress = sys.stderr.isatty()
    out = sys.stdout

    async def run() -> int:
        written, after = 0, 0
        writer = csv.writer(out, lineterminator="\n") if form == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        async with _store(config) as store:
            while True:
                page = await store.export(after_seq=after, since=start, until=end, limit=PAGE)
                if not page:
                    return written
                for _, event in page:
                    if writer is not None:
                        writer.writerow(csv_row(event))
                    else:
                        out.write(event.dumps().decode() + "\n")
                written += len(page)
                after = page[-1][0]
                if progress:
                    click.echo(f"\r{written:,} events", err=True, nl=False)

    try:
        count = asyncio.run(run())
    except GatewayError as exc:
        _fail(str(exc))
    except BrokenPipeError:  # `export | head`: the reader has what it wanted
        return
    out.flush()
    if progress:
        click.echo(f"\r{count:,} events exported", err=True)
