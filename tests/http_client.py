"""A small blocking HTTP client for tests that talk to real processes, over aiohttp: the project's
one HTTP client library (the gateway forwards with it, the CLI sends with it).

Requests run on one background event loop, so a Client can be shared by a test's threads (load
from a thread pool) the way the tests' traffic needs.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

_loop: asyncio.AbstractEventLoop | None = None
_started = threading.Lock()


def _background() -> asyncio.AbstractEventLoop:
    global _loop
    with _started:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="http-client", daemon=True).start()
        return _loop


class HTTPError(Exception):
    """No HTTP answer: refused, reset, or (Timeout) not in time."""


class Timeout(HTTPError):
    pass


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: dict[str, str]  # names in lower case
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class Client:
    def __init__(self, base_url: str = "", timeout: float = 30, keepalive: bool = True) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    def _run(self, work: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(work, _background())
        try:
            return future.result(timeout + 5)  # the request's own timeout comes first
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise Timeout(f"no answer within {timeout:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise HTTPError(f"{type(exc).__name__}: {exc}") from exc

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=not self._keepalive, limit=0), auto_decompress=False)
        return self._session

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, content: bytes = b"",
                timeout: float | None = None) -> Answer:
        seconds = timeout or self.timeout

        async def send() -> Answer:
            session = await self._open()
            async with session.request(method, self.base_url + url, headers=headers, data=content or None,
                                       allow_redirects=False, timeout=aiohttp.ClientTimeout(total=seconds)) as got:
                return Answer(got.status, {k.lower(): v for k, v in got.headers.items()}, await got.read())

        answer: Answer = self._run(send(), seconds)
        return answer

    def get(self, url: str, **options: Any) -> Answer:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> Answer:
        return self.request("POST", url, **options)

    @contextmanager
    def lines(self, url: str, *, headers: dict[str, str] | None = None,
              read_timeout: float = 10) -> Iterator[tuple[Answer, Iterator[str]]]:
        """A streamed answer (its content empty) and its lines as they come; Timeout when none
        comes for `read_timeout` seconds."""
        opened: list[aiohttp.ClientResponse] = []

        async def start() -> Answer:
            session = await self._open()
            response = await session.get(self.base_url + url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=None, connect=10,
                                                                       sock_read=read_timeout))
            opened.append(response)
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, b"")

        async def line() -> bytes:
            return await opened[0].content.readline()

        def each() -> Iterator[str]:
            while data := self._run(line(), read_timeout):
                yield data.decode().rstrip("\r\n")

        answer: Answer = self._run(start(), 10)
        try:
            yield answer, each()
        finally:
            if opened:
                opened[0].close()

    def close(self) -> None:
        if self._session is not None:
            self._run(self._session.close(), 10)
            self._session = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_shared = Client()
atexit.register(_shared.close)


def get(url: str, **options: Any) -> Answer:
    return _shared.get(url, **options)


def post(url: str, **options: Any) -> Answer:
    return _shared.post(url, **options)
