"""The baselines: a raw ASGI floor, and the tutorial-style handlers the providers' guides show."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

TWILIO_PATH = "/webhooks/twilio/bench"
VONAGE_PATH = "/webhooks/vonage/bench"
validator = RequestValidator(os.environ.get("TWILIO_AUTH_TOKEN", ""))
SECRET = os.environ.get("VONAGE_SIGNATURE_SECRET", "")


async def floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Drains the body and answers 200: what uvicorn itself costs."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


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
