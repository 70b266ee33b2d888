"""The forwarding commands of `status-gateway`: deliveries, delivery, redeliver, and following a
running gateway's /v1/stream for `tail --follow --url`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click
import orjson

from gateway.cli import CONFIG_OPTION, _fail, _load, _store, main
from gateway.clock import system_clock
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.model import StatusEvent, utc_iso
from gateway.sinks.base import DELIVERY_STATES


def _run_on_store(config: Config, work: Callable[[Any], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with _store(config) as store:
            return await work(store)

    try:
        return asyncio.run(run())
    except GatewayError as exc:
        _fail(str(exc))


@main.command()
@CONFIG_OPTION
@click.option("--subscription", help="Only this subscription's deliveries.")
@click.option("--state", type=click.Choice(DELIVERY_STATES))
@click.option("--message-id", help="Only the deliveries of this message.")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON delivery per line.")
def deliveries(config_path: str | None, subscription: str | None, state: str | None, message_id: str | None,
               count: int, as_json: bool) -> None:
    """List forwarding deliveries, newest first."""
    config = _load(config_path, dev_secrets=True)
    found = _run_on_store(config, lambda store: store.deliveries(
        subscription=subscription, state=state, message_id=message_id, limit=count))
    for item in found:
        if as_json:
            click.echo(orjson.dumps(item).decode())
        else:
            click.echo(f"{item['id']}  {item['subscription']:<12} {item['state']:<9} {item['attempts']:>2} attempts  "
                       f"{item['provider']} {item['message_id']}  next {item['next_at']}")


@main.command()
@CONFIG_OPTION
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as /v1/deliveries/{id} answers.")
def delivery(config_path: str | None, delivery_id: str, as_json: bool) -> None:
    """Show one delivery and every attempt: time, HTTP status or error, duration."""
    config = _load(config_path, dev_secrets=True)
    found = _run_on_store(config, lambda store: store.delivery(delivery_id))
    if found is None:
        _fail(f"no delivery {delivery_id}")
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"delivery {found['id']} to {found['subscription']}: {found['state']} after {found['attempts']} "
               f"attempts (webhook-id {found['event_id']}, {found['provider']} {found['message_id']})")
    for attempt in found["history"]:
        answer = f"HTTP {attempt['http_status']}" if attempt["http_status"] is not None else attempt["error"]
        click.echo(f"  #{attempt['attempt']:<2} {attempt['at']}  {answer}  {attempt['duration_ms']:.0f} ms")


@main.command()
@CONFIG_OPTION
@click.argument("delivery_ids", nargs=-1)
@click.option("--subscription", help="Every delivery of this subscription (with --since); re-enables it after a 410.")
@click.option("--since", help="With --subscription: deliveries of events received at or after this ISO 8601 time.")
def redeliver(config_path: str | None, delivery_ids: tuple[str, ...], subscription: str | None,
              since: str | None) -> None:
    """Send deliveries again, with the same webhook-id and a fresh retry schedule."""
    from gateway.api import parse_since

    if bool(delivery_ids) == bool(subscription):
        _fail("give delivery ids, or --subscription (and --since)")
    try:
        moment = parse_since(since)
    except GatewayError as exc:
        _fail(str(exc))
    config = _load(config_path, dev_secrets=True)
    queued = _run_on_store(config, lambda store: store.redeliver(
        ids=list(delivery_ids), subscription=subscription, since=utc_iso(moment) if moment else None,
        now=utc_iso(system_clock())))
    click.echo(f"{len(queued)} deliver{'y' if len(queued) == 1 else 'ies'} queued to be sent again")
    missing = set(delivery_ids) - set(queued)
    if missing:
        _fail(f"no delivery {', '.join(sorted(missing))}")


def follow_stream(url: str, token: str | None, show: Callable[[StatusEvent], None]) -> None:
    """Prints the events of a gateway's /v1/stream (Server-Sent Events) as they come, resuming with
    Last-Event-ID when the connection drops."""
    if not token:
        _fail("server.api_token is empty: /v1/stream needs it")
    asyncio.run(_follow(url.rstrip("/") + "/v1/stream", token, show))


async def _follow(url: str, token: str, show: Callable[[StatusEvent], None]) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    last: str | None = None
    # No read timeout: the stream's keep-alive comments come every few seconds, events when they do.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=30)) as session:
        while True:
            try:
                async with session.get(url, headers={**headers, **({"Last-Event-ID": last} if last else {})}) as answer:
                    if answer.status != 200:
                        _fail(f"{url} answered {answer.status}: {(await answer.read()).decode()[:200]}")
                    async for raw in answer.content:
                        line = raw.decode().rstrip("\r\n")
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("data: "):
                            show(StatusEvent.loads(line[6:]))
                            sys.stdout.flush()
            except (aiohttp.ClientError, OSError) as exc:
                click.echo(f"stream interrupted ({type(exc).__name__}); reconnecting", err=True)
            await asyncio.sleep(1)  # before reconnecting (also after the server ended the stream)
