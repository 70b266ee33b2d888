"""The quarantine's commands of `status-gateway` (SPEC §11): refused, explain, replay."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any, cast

import click
import orjson

from gateway.cli import CONFIG_OPTION, SINCE_HELP, _fail, _load, _time, main
from gateway.cli_forwarding import _run_on_store
from gateway.clock import system_clock
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.model import Refused
from gateway.quarantine import Replayed, explain, replay
from gateway.sinks import Store

ALL = 1_000_000  # every kept one: the quarantine is bounded per endpoint anyway


@main.command()
@CONFIG_OPTION
@click.option("--endpoint", help="Only this endpoint's.")
@click.option("--since", help=SINCE_HELP)
@click.option("-n", "count", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON line each.")
def refused(config_path: str | None, endpoint: str | None, since: str | None, count: int, as_json: bool) -> None:
    """List the callbacks refused for their signature or token, newest first: what, when and why."""
    config = _load(config_path, dev_secrets=True)
    start = _time(since, system_clock())
    found: list[Refused] = _run_on_store(config, lambda store: store.refused(endpoint=endpoint, since=start,
                                                                              limit=count))
    if not found and not as_json:
        click.echo("No refused callbacks are kept" + (f" for endpoint {endpoint}." if endpoint else "."))
    for item in found:
        if as_json:
            click.echo(orjson.dumps(item.to_json()).decode())
        else:
            click.echo(f"{item.id}  {item.received_at}  {item.endpoint:<14} {item.code:<18} {item.detail}")


@main.command(name="explain")
@CONFIG_OPTION
@click.argument("refused_id")
def explain_command(config_path: str | None, refused_id: str) -> None:
    """Say what would make a refused callback verify, and what to change in config.yaml."""
    config = _load(config_path, dev_secrets=True)
    found: list[Refused] = _run_on_store(config, lambda store: store.refused(ids=[refused_id], limit=1))
    if not found:
        _fail(f"no refused callback {refused_id} is kept (status-gateway refused lists them)")
    item = found[0]
    click.echo(f"{item.id}: {item.code} on endpoint {item.endpoint} at {item.received_at}")
    click.echo(f"  refused because {item.detail}")
    for finding in explain(item, config):
        click.echo(f"  - {finding}")


@main.command(name="replay")
@CONFIG_OPTION
@click.argument("ids", nargs=-1)
@click.option("--endpoint", help="Every kept one of this endpoint (with --since, --until: of that time).")
@click.option("--since", help=SINCE_HELP)
@click.option("--until", help=SINCE_HELP)
def replay_command(config_path: str | None, ids: tuple[str, ...], endpoint: str | None, since: str | None,
                   until: str | None) -> None:
    """Verify refused callbacks again with the current config: each that verifies is stored, with
    the time it first arrived, and forwarded like any event; each that does not stays."""
    if not ids and not endpoint:
        _fail("name refused callbacks by id, or give --endpoint (and --since/--until)")
    if ids and (endpoint or since or until):
        _fail("give ids, or --endpoint with --since/--until, not both")
    config = _load(config_path, dev_secrets=True)
    now = system_clock()
    start, end = _time(since, now), _time(until, now)
    try:
        results = asyncio.run(_replay(config, list(ids), endpoint, start, end))
    except GatewayError as exc:
        _fail(str(exc))
    missing = set(ids) - {result.refused.id for result in results}
    for key in sorted(missing):
        click.echo(f"{key}  not kept (status-gateway refused lists what is)")
    for result in results:
        verdict = "stays: " if result.kept else f"{result.outcome}: "
        click.echo(f"{result.refused.id}  {result.refused.endpoint:<14} {verdict}{result.detail}")
    kept = sum(result.kept for result in results)
    click.echo(f"{len(results) - kept} replayed, {kept} still refused")
    if kept or missing:
        raise SystemExit(1)


async def _replay(config: Config, ids: list[str], endpoint: str | None, since: str | None,
                  until: str | None) -> list[Replayed]:
    """Through the gateway's own callback path and sinks (the outbox's rows too), in this process:
    the gateway itself may be stopped, or running beside it (the stores take turns)."""
    from gateway.app import create_app

    gateway = create_app(config)
    store: Any = gateway.state.store
    if store is None:
        raise GatewayError("replay needs a store (sqlite or postgres) among the sinks: the quarantine is kept there")
    async with AsyncExitStack() as opened:
        for _, sink in gateway.sinks:
            await sink.open()
            opened.push_async_callback(sink.close)
        records = await store.refused(ids=ids, endpoint=endpoint, since=since, until=until,
                                      limit=len(ids) if ids else ALL)
        routes = {route.endpoint: route for route in gateway.callbacks.values()}
        return await replay(list(reversed(records)), routes, config.server, cast(Store, store))
