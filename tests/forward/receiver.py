"""A subscriber on loopback: a real uvicorn server (in a thread) that answers from a script and
records every request it gets, for the forwarding tests."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from gateway.cli import free_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    drip: float = 0.0  # seconds between the body's bytes (a receiver that answers very slowly)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


@dataclass
class Receiver:
    script: list[Answer] = field(default_factory=list)  # answers in order; then 200 for ever
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, body, time.monotonic()))
        answer = self.script.pop(0) if self.script else Answer()
        payload = b"ok" * 8
        await send({"type": "http.response.start", "status": answer.status, "headers": [
            (b"content-length", str(len(payload)).encode()),
            *((k.encode(), v.encode()) for k, v in answer.headers)]})
        if answer.drip:
            for index in range(len(payload)):
                await send({"type": "http.response.body", "body": payload[index:index + 1], "more_body": True})
                await asyncio.sleep(answer.drip)  # the receiver's own slowness: what the attempt's deadline bounds
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": payload})

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@dataclass
class Running:
    receiver: Receiver
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def serve(receiver: Receiver) -> Running:
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=receiver.port, log_level="warning",
                                           lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # polls a condition with a deadline
        assert thread.is_alive() and time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.01)
    return Running(receiver, server, thread)
