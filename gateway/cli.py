"""The `status-gateway` command: serve, check, urls, simulate, status, tail, and the forwarding
deliveries (deliveries, delivery, redeliver)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NoReturn

import click
import orjson

from gateway import devmode
from gateway.config import Config, load_config, parse_config, read_document, required_variables, resolve_path
from gateway.errors import ConfigError, GatewayError
from gateway.model import CATEGORIES, Reason, Status, StatusEvent, utc_iso
from gateway.simulate import SCENARIOS
from gateway.stats import moment
from providers import EVENT_PROVIDERS, PROVIDERS

SINCE_HELP = "A span back from now (24h, 7d) or an ISO time."
CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             help="Path of config.yaml (default ./config.yaml, then $GATEWAY_CONFIG).")


@click.group()
@click.version_option(package_name="status-gateway")
def main() -> None:
    """One verified, normalized webhook endpoint for Twilio and Vonage delivery statuses."""


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _time(value: str | None, now: datetime) -> str | None:
    """A --since/--until argument as the stores compare times (ISO 8601 UTC); None for none."""
    try:
        found = moment(value, now)
    except ValueError:
        _fail(f"{value!r} is neither a span (24h, 7d) nor an ISO 8601 time")
    return utc_iso(found) if found else None


def _load(config_path: str | None, *, dev_secrets: bool = False) -> Config:
    """The config, with dev secrets from the dev file filling unset variables when asked."""
    path = resolve_path(config_path)
    env: dict[str, str] = dict(os.environ)
    if dev_secrets:  # the real environment always wins over the dev file
        env = {**devmode.read_dev_secrets(devmode.dev_file(path)), **{k: v for k, v in env.items() if v}}
    try:
        return load_config(path, env)
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


@main.command()
@CONFIG_OPTION
@click.option("--host", help="Bind address (default: server.host).")
@click.option("--port", type=int, help="Port (default: server.port; 0 picks a free one).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--dev", is_flag=True,
              help="Fill unset secrets with random development values kept in a 0600 file beside the config.")
def serve(config_path: str | None, host: str | None, port: int | None, workers: int, dev: bool) -> None:
    """Run the gateway under uvicorn."""
    import uvicorn

    from gateway.logs import configure_logging

    path = resolve_path(config_path).resolve()
    if dev:
        try:
            missing = devmode.unset(required_variables(read_document(path)))
        except ConfigError as exc:
            _fail(str(exc))
        if missing:
            secrets_path = devmode.dev_file(path)
            os.environ.update(devmode.ensure_dev_secrets(secrets_path, missing))
            click.secho(
                f"\n  DEVELOPMENT MODE: {', '.join(sorted(missing))} not set in the environment.\n"
                f"  Using random development secrets from {secrets_path} (mode 0600).\n"
                "  Real provider callbacks will be refused; `status-gateway simulate` signs with these.\n"
                "  Never use --dev in production: set the variables instead.\n",
                fg="yellow", bold=True, err=True)
    config = _load(str(path))
    configure_logging(config.server.log_level, config.server.log_format)
    os.environ["GATEWAY_CONFIG"] = str(path)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="status-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # every worker adds to one set of totals
    host = host or config.server.host
    port = config.server.port if port is None else port
    if port == 0 and workers > 1:
        port = free_port(host)  # uvicorn's multi-worker start-up would announce port 0
    try:
        uvicorn.run(
            "gateway.app:app_from_environment", factory=True, host=host, port=port,
            workers=workers, log_config=None, access_log=False, server_header=False,
            proxy_headers=False, timeout_graceful_shutdown=30,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (also used by the tests and bench/)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@main.command()
@CONFIG_OPTION
def check(config_path: str | None) -> None:
    """Validate the config and list its endpoints and sinks."""
    config = _load(config_path)
    click.echo(f"config {config.path}: OK")
    click.echo(f"public URL: {config.server.public_url or '(the request URL)'}")
    for endpoint in config.endpoints:
        click.echo(f"endpoint {endpoint.name}: {endpoint.provider} at {endpoint.path}")
    for sink in config.sinks:
        where = getattr(sink, "path", None) or "(dsn from the environment)"
        click.echo(f"sink {sink.type}: {where}")
    click.echo(f"/v1 API: {api_state(config)}")
    for subscription in config.forward.subscriptions if config.forward else ():  # never its secrets
        filters = [f"events {', '.join(subscription.events)}"]
        filters += [f"providers {', '.join(subscription.providers)}"] if subscription.providers else []
        filters += [f"endpoints {', '.join(subscription.endpoints)}"] if subscription.endpoints else []
        filters += ["final only"] if subscription.final_only else []
        filters += ["with raw"] if subscription.include_raw else []
        click.echo(f"subscription {subscription.name}: {subscription.url} ({'; '.join(filters)}; "
                   f"{len(subscription.secret)} secret{'s' if len(subscription.secret) > 1 else ''})")


def api_state(config: Config) -> str:
    """What /v1 will do with this config: it needs a token and a store to read."""
    has_store = any(sink.store for sink in config.sinks)
    if not config.server.api_token:
        return "off (404: server.api_token is empty)"
    if not has_store:
        return "off (404: no sqlite or postgres sink to read from)"
    return "on (bearer token server.api_token)"


@main.command()
@CONFIG_OPTION
def urls(config_path: str | None) -> None:
    """Print each endpoint's public URL and where to set it at its provider.

    A URL needs no secret, so unset secrets are named as a warning, not an error: the URLs come first.
    """
    path = resolve_path(config_path)
    try:
        tree = read_document(path)
        missing = devmode.unset(required_variables(tree))
    except ConfigError as exc:
        _fail(str(exc))
    if isinstance(tree, dict):
        tree.pop("forward", None)  # subscriptions have no URL to paste (and placeholders are no whsec_ secrets)
    if missing:
        click.echo(f"warning: {', '.join(sorted(missing))} not set: `serve` needs them (`serve --dev` makes "
                   "development values); the URLs do not depend on them.\n", err=True)
    env = {**os.environ, **{name: "unset" for name in missing}}
    try:
        config = parse_config(tree, env)
    except ConfigError as exc:
        _fail(str(exc))
    base = config.server.public_url or f"http://{config.server.host}:{config.server.port}"
    if not config.server.public_url:
        click.echo("server.public_url is not set: these URLs use the bind address; set the public one.\n")
    for endpoint in config.endpoints:
        url = base + endpoint.path
        click.echo(f"{endpoint.name} ({endpoint.provider})\n  {url}\n{PROVIDERS[endpoint.provider].setup(url)}\n")


@main.command()
@CONFIG_OPTION
@click.argument("provider", type=click.Choice(sorted(PROVIDERS)))
@click.argument("status", required=False)
@click.option("--endpoint", "endpoint_name", help="Endpoint name (default: the provider's first).")
@click.option("--message-id", help="Message id (default: a new random one).")
@click.option("--url", help="Where to send (default: the config's host and port).")
@click.option("--error-code", help="Provider error code (default for failures: the vendor's most common one).")
@click.option("--scenario", type=click.Choice(SCENARIOS),
              help="Send a whole realistic sequence for one message.")
def simulate(config_path: str | None, provider: str, status: str | None, endpoint_name: str | None,
             message_id: str | None, url: str | None, error_code: str | None, scenario: str | None) -> None:
    """Send correctly signed callbacks, as PROVIDER would, to a running gateway."""
    from gateway import simulate as sim

    if not status and not scenario:
        _fail("give a STATUS (e.g. delivered) or --scenario")
    config = _load(config_path, dev_secrets=True)
    try:
        target = sim.target(config, provider, endpoint_name, url)
        steps = list(sim.plan(provider, scenario, status, error_code))
    except ConfigError as exc:
        _fail(str(exc))
    first_id = message_id or sim.new_message_id(provider)
    click.echo(f"{provider} message {first_id} → {target.send_url} (signed for {target.signed_url})")
    failures = 0

    async def send_all() -> None:
        nonlocal failures
        current_id = first_id
        async with sim.Sender() as sender:
            for word, times, step_code in steps:
                request = sim.build(target, word, current_id, step_code)
                for _ in range(times):
                    try:
                        code, text = await sender.send(request)
                    except sim.Unreachable as exc:
                        _fail(f"cannot reach {target.send_url}: {exc} (is `status-gateway serve` running?)")
                    click.echo(f"  sent {word:<13} {request.body.decode()[:160]}")
                    click.echo(f"  → {code} {text if word == Status.RECEIVED.value else text[:200]}")
                    failures += code != 200
                if word == Status.RECEIVED.value:  # what follows are the statuses of the reply: a new message
                    current_id = sim.new_message_id(provider)
                    click.echo(f"{provider} reply {current_id} → {target.send_url}")

    asyncio.run(send_all())
    sys.exit(1 if failures else 0)


@asynccontextmanager
async def _store(config: Config) -> AsyncIterator[Any]:
    from gateway.sinks import open_sink

    for sink_config in config.sinks:
        if sink_config.store:
            sink = open_sink(sink_config, reading=True)
            await sink.open()
            try:
                yield sink
            finally:
                await sink.close()
            return
    raise ConfigError("no store (sqlite or postgres) among the configured sinks")


def _event_line(event: StatusEvent) -> str:
    error = f" error={event.error_code}" if event.error_code else ""
    reason = f" reason={event.reason.category}" if event.reason else ""
    return (f"{event.received_at}  {event.provider:<7} {event.endpoint:<14} {event.message_id}  "
            f"{event.status.value:<12} ({event.provider_status}){error}{reason}{_text_of(event)}")


def _reason_line(reason: Reason) -> str:
    """What a sender does with it: a permanent reason will fail the same way if sent again unchanged."""
    lasting = "permanent: do not resend unchanged" if reason.permanent else "temporary: may succeed later"
    return f"reason {reason.category} ({lasting}){': ' + reason.description if reason.description else ''}"


def _text_of(event: StatusEvent, width: int = 60) -> str:
    """An incoming message's text on one line, cut to `width`, and how many attachments it has."""
    if event.direction != "inbound":
        return ""
    text = " ".join((event.text or "").split())
    text = text if len(text) <= width else text[:width - 1] + "…"
    media = f" +{len(event.media)} media" if event.media else ""
    return f" from {event.sender or '?'}: {text!r}{media}"


@main.command()
@CONFIG_OPTION
@click.argument("message_id")
@click.option("--provider", type=click.Choice(EVENT_PROVIDERS), help="Provider (default: whichever has it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, as /v1/messages answers.")
def status(config_path: str | None, message_id: str, provider: str | None, as_json: bool) -> None:
    """Print a message's current status and its timeline."""
    config = _load(config_path, dev_secrets=True)

    async def read() -> tuple[str, StatusEvent, list[StatusEvent]] | None:
        async with _store(config) as store:
            for name in [provider] if provider else EVENT_PROVIDERS:
                current = await store.current(name, message_id)
                if current is not None:
                    return name, current, await store.timeline(name, message_id)
        return None

    try:
        found = asyncio.run(read())
    except GatewayError as exc:
        _fail(str(exc))
    if found is None:
        _fail(f"no events for message {message_id}")
    name, current, events = found
    if as_json:
        click.echo(orjson.dumps({
            "provider": name, "message_id": message_id, "status": current.status.value,
            "provider_status": current.provider_status, "final": current.final,
            "updated_at": current.received_at, "events": [e.to_json() for e in events],
        }, option=orjson.OPT_INDENT_2).decode())
        return
    final = "final" if current.final else "not final"
    click.echo(f"{name} {message_id}: {current.status.value} ({final}; provider said {current.provider_status!r})")
    click.echo(f"updated {current.received_at}")
    if current.reason is not None:
        click.echo(_reason_line(current.reason))
    click.echo()
    click.echo(f"{'#':>3}  {'received_at':<27} {'status':<12} {'provider_status':<15} {'error':<6} occurred_at")
    for index, event in enumerate(events, 1):
        mark = "*" if event.id == current.id else " "
        click.echo(f"{index:>3}{mark} {event.received_at:<27} {event.status.value:<12} "
                   f"{event.provider_status:<15} {event.error_code or '-':<6} {event.occurred_at or '-'}"
                   f"{_text_of(event)}")


@main.command()
@CONFIG_OPTION
@click.option("-n", "count", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are stored.")
@click.option("--provider", type=click.Choice(EVENT_PROVIDERS))
@click.option("--status", "status_filter", type=click.Choice([s.value for s in Status]))
@click.option("--reason", type=click.Choice(CATEGORIES), help="Only failures of this reason category.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.option("--url", help="With --follow: a running gateway's base URL; follows its /v1/stream (server.api_token).")
def tail(config_path: str | None, count: int, follow: bool, provider: str | None,
         status_filter: str | None, reason: str | None, as_json: bool, url: str | None) -> None:
    """Print the newest normalized events, oldest of them first."""
    config = _load(config_path, dev_secrets=True)
    wanted = Status(status_filter) if status_filter else None

    def show(event: StatusEvent) -> None:
        if ((provider is None or event.provider == provider) and (wanted is None or event.status is wanted)
                and (reason is None or (event.reason is not None and event.reason.category == reason))):
            click.echo(orjson.dumps(event.to_json()).decode() if as_json else _event_line(event))

    if url:
        if not follow:
            _fail("--url goes with --follow")
        from gateway.cli_forwarding import follow_stream

        try:
            follow_stream(url, config.server.api_token, show)
        except KeyboardInterrupt:
            pass
        return

    async def run() -> None:
        async with _store(config) as store:
            rows = await store.recent(provider=provider, status=wanted, limit=count, reason=reason)
            last = rows[0][0] if rows else 0
            for _, event in reversed(rows):
                show(event)
            sys.stdout.flush()
            while follow:
                await asyncio.sleep(0.5)  # polling the store: the gateway may be another process
                rows = await store.recent(provider=provider, status=wanted, limit=1000, after_seq=last,
                                          reason=reason)
                for seq, event in reversed(rows):
                    show(event)
                    last = max(last, seq)
                sys.stdout.flush()

    try:
        asyncio.run(run())
    except GatewayError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


# The forwarding commands (deliveries, delivery, redeliver), the quarantine's (refused, explain, replay),
# `export` and `report` register themselves on `main`.
from gateway import cli_export, cli_forwarding, cli_refused, cli_report  # noqa: E402,F401
