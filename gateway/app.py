"""create_app(config): callback routes from the config, sinks opened in the lifespan, one refusal handler."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from types import FrameType
from typing import Any, Protocol, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway import metrics
from gateway.api import api_mount
from gateway.clock import Clock, system_clock
from gateway.config import Config, load_config
from gateway.errors import GatewayError, from_http, refusal
from gateway.forward.dispatcher import Dispatcher
from gateway.forward.outbox import Outbox as OutboxPart
from gateway.load import CallbackLoad
from gateway.metrics import metrics_endpoint
from gateway.quarantine import Quarantine
from gateway.sinks import Part, Sink, Store, open_sink, sink_label
from gateway.sinks.base import Outbox
from gateway.ui import ui_routes
from gateway.webhook import CallbackRoute, Receive, Scope, Send

log = logging.getLogger("gateway")
NamedSinks = list[tuple[str, Sink]]  # ("sinks.1:sqlite", the sink), in config order


class Service(Protocol):
    """Work of its own beside the callbacks, for the process's lifetime."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Gateway:
    """The ASGI app: a callback path goes straight to its CallbackRoute, anything else to Starlette.

    It owns the sinks' lifetime (the ASGI lifespan): opened in config order at start-up, closed in
    reverse at shutdown, so each has flushed what it took before the process exits. A sink that
    cannot open fails the start-up with its one-line reason (uvicorn then exits with status 3).
    """

    def __init__(self, callbacks: dict[str, CallbackRoute], rest: Starlette, sinks: NamedSinks,
                 services: Sequence[Service] = (), stopping: asyncio.Event | None = None) -> None:
        self.callbacks = callbacks
        self.rest = rest
        self.sinks = sinks
        self.services = tuple(services)  # the dispatcher, the quarantine's writer: started after the sinks
        self.state = rest.state
        self.stopping = stopping or asyncio.Event()  # the server was told to stop: streams end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.callbacks.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        await self.rest(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        _tell_on_exit_signals(self.stopping)
        async with AsyncExitStack() as opened:
            try:
                for _, sink in self.sinks:
                    await sink.open()
                    opened.push_async_callback(sink.close)
                for service in self.services:  # stopped before the sinks close
                    await service.start()
                    opened.push_async_callback(service.stop)
            except GatewayError as exc:
                log.error("cannot start: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": ""})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def create_app(config: Config, *, clock: Clock = system_clock) -> Gateway:
    """The gateway for this config; `clock` is its one source of "now" (tests run it far from the wall clock)."""
    labels = [sink_label(index, sink.type) for index, sink in enumerate(config.sinks)]
    # The outbox's rows commit with each event in the first store's own transaction; that store
    # alone keeps them (a second store would make a second copy of every delivery).
    store_at = next((i for i, sink in enumerate(config.sinks) if sink.store), None)
    outbox_at = store_at if config.forward else None
    parts: list[Part] = [OutboxPart(config.forward.subscriptions)] if config.forward else []
    sinks = [(label, open_sink(sink, observe=metrics.SINK_WRITE.labels(label).observe,
                               parts=parts if index == outbox_at else ()))
             for index, (label, sink) in enumerate(zip(labels, config.sinks, strict=True))]
    load = CallbackLoad()
    dispatcher = (Dispatcher(cast(Outbox, sinks[outbox_at][1]), config.forward, clock=clock, load=load)
                  if config.forward and outbox_at is not None else None)
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", partial(readyz, sinks=sinks)),
        Route("/metrics", metrics_endpoint),
    ]
    store = sinks[store_at][1] if store_at is not None else None
    quarantine = Quarantine(cast(Store, store), config.quarantine) if store is not None else None
    callbacks = callback_routes(config, sinks, clock, dispatcher.wake if dispatcher else None, load,
                                cast(Store | None, store), quarantine)
    stopping = asyncio.Event()
    if config.server.api_token and store is not None:
        routes.append(api_mount(cast(Store, store), config.server.api_token, outbox=cast(Outbox, store), clock=clock,
                                stopping=stopping))
        routes += ui_routes(config.server.api_token, clock,
                            https=(config.server.public_url or "").startswith("https://"))

    app = Starlette(routes=routes, exception_handlers={GatewayError: refuse, HTTPException: refuse})
    app.router.redirect_slashes = False  # a trailing slash changes the signed URL: 404, not a redirect
    app.state.config = config
    app.state.store = store
    services = [service for service in (dispatcher, quarantine) if service is not None]
    return Gateway(callbacks, app, sinks, services, stopping)


def _tell_on_exit_signals(stopping: asyncio.Event) -> None:
    """Sets `stopping` on SIGTERM or SIGINT, then lets uvicorn's own handler run.

    uvicorn waits for open responses before it shuts the app down; an open /v1/stream (a
    dashboard left open) would hold every shutdown to its graceful timeout. Under a test client
    (not the main thread) there is nothing to hook, and nothing that waits.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if not callable(previous):
            continue

        def handler(sig: int, frame: FrameType | None, previous: Callable[..., Any] = previous) -> None:
            loop.call_soon_threadsafe(stopping.set)
            previous(sig, frame)

        signal.signal(number, handler)


def callback_routes(config: Config, sinks: NamedSinks, clock: Clock = system_clock,
                    stored: Callable[[], None] | None = None, load: CallbackLoad | None = None,
                    store: Store | None = None, quarantine: Quarantine | None = None) -> dict[str, CallbackRoute]:
    """Each endpoint's path → its route, handing events to these sinks (`stored`: told of each new
    one; `load`: counts the callbacks being verified and stored; `store`: keeps unread callbacks and
    parts of messages; `quarantine`: keeps refused ones)."""
    return {
        endpoint.path: CallbackRoute(endpoint=endpoint.name, path=endpoint.path, provider=endpoint.adapter(),
                                     sinks=sinks, server=config.server, clock=clock, stored=stored, load=load,
                                     store=store, quarantine=quarantine)
        for endpoint in config.endpoints
    }


def app_from_environment() -> Gateway:
    """Factory for uvicorn (`--workers N` needs an import string): the config named by $GATEWAY_CONFIG."""
    from gateway.logs import configure_logging

    config = load_config(os.environ["GATEWAY_CONFIG"])
    configure_logging(config.server.log_level, config.server.log_format)
    return create_app(config)


async def refuse(request: Request, exc: Exception) -> Response:
    """Every error answer outside the callback path: Starlette's own 404 and 405 become ours first."""
    if isinstance(exc, HTTPException):
        exc = from_http(exc.status_code, exc.detail, (exc.headers or {}).get("Allow", ""))
    assert isinstance(exc, GatewayError)
    status, headers, body = refusal(exc)
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request, *, sinks: NamedSinks) -> Response:
    states = {label: await sink.ready() for label, sink in sinks}
    ready = all(states.values())
    return JSONResponse({"ready": ready, "sinks": states}, status_code=200 if ready else 503)


__all__ = ["Store", "app_from_environment", "create_app"]
