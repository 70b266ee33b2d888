"""The baselines: a raw ASGI floor, the tutorial-style handlers the providers' guides show, and the
ceiling: the gateway's own callback path with nothing to store and no access log."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from gateway.app import callback_routes
from gateway.config import parse_config
from gateway.webhook import CallbackRoute

TWILIO_PATH = "/webhooks/twilio/bench"
VONAGE_PATH = "/webhooks/vonage/bench"
ENDPOINTS = [  # the gateway's endpoints in every bench config (bench.run writes them; the ceiling reads them)
    {"name": "twilio-bench", "provider": "twilio", "path": TWILIO_PATH, "auth_token": "${TWILIO_AUTH_TOKEN}"},
    # Tokens are signed once before the run, which may last longer than the default window.
    {"name": "vonage-bench", "provider": "vonage", "path": VONAGE_PATH,
     "signature_secret": "${VONAGE_SIGNATURE_SECRET}", "max_token_age": 3600},
]
validator = RequestValidator(os.environ.get("TWILIO_AUTH_TOKEN", ""))
SECRET = os.environ.get("VONAGE_SIGNATURE_SECRET", "")


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Drains the body and answers 200: what uvicorn itself costs."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class Ceiling:
    """The gateway's CallbackRoute (read, verify, parse, metrics, answer) with no sink and no access log.

    The gateway cannot go faster than this without a cheaper way to verify and parse: what the
    gateway_* targets lose against it is the cost of keeping the event (log line, commit, access log).
    """

    def __init__(self) -> None:
        self.routes: dict[str, CallbackRoute] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.routes = callback_routes(parse_config({"endpoints": ENDPOINTS}, os.environ), sinks=[])
            await lifespan(receive, send)
            return
        route = self.routes.get(scope["path"])
        if route is None:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await route(scope, receive, send)


ceiling = Ceiling()


async def twilio(request: Request) -> Response:
    form = await request.form()
    if not validator.validate(str(request.url), form, request.headers.get("X-Twilio-Signature", "")):
        return Response(status_code=403)
    print(dict(form), flush=True)
    return Response('<?xml version="1.0" encoding="UTF-8"?><Response/>', media_type="text/xml")


async def vonage(request: Request) -> Response:
    body = await request.body()
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        return Response(status_code=401)
    if hashlib.sha256(body).hexdigest() != claims.get("payload_hash"):
        return Response(status_code=401)
    print(json.loads(body), flush=True)
    return Response()


async def healthz(request: Request) -> Response:
    return Response('{"status":"ok"}')


naive = Starlette(routes=[
    Route(TWILIO_PATH, twilio, methods=["POST"]),
    Route(VONAGE_PATH, vonage, methods=["POST"]),
    Route("/healthz", healthz),
])


class Receiver:
    """A fast subscriber for bench.forward: answers 200 at once and remembers each delivery's
    webhook-id, arrival time and the event's received_at; GET /dump gives them all back."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        answer = b""
        if scope["method"] == "POST":
            headers = dict(scope["headers"])
            received_at = orjson.loads(body)["data"]["received_at"]
            self.arrivals.append((headers[b"webhook-id"].decode(), time.time(), received_at))
        elif scope["path"] == "/dump":
            answer = orjson.dumps({"arrivals": self.arrivals})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


receiver = Receiver()
