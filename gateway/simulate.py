"""`status-gateway simulate`: realistic, correctly signed callbacks sent to a running gateway.

What a vendor's callbacks look like (words, scenarios, signing) lives in its providers/ module;
this module only picks the endpoint, builds the plan and sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.clock import system_clock
from gateway.config import Config, Endpoint
from gateway.errors import ConfigError
from providers import PROVIDERS
from providers.base import SampleRequest

if TYPE_CHECKING:  # the CLI imports this module for its choices; aiohttp only when it sends
    import aiohttp

FAILURE_WORDS = {"failed", "undelivered", "undeliverable", "rejected"}
SCENARIOS: tuple[str, ...] = tuple(sorted({name for cls in PROVIDERS.values() for name in cls.scenarios}))


@dataclass(frozen=True, slots=True)
class Target:
    endpoint: Endpoint
    send_url: str  # where the request goes
    signed_url: str  # what the provider would have signed (docs/events.md#delivery)


def target(config: Config, provider: str, endpoint_name: str | None, url: str | None) -> Target:
    candidates = [e for e in config.endpoints if e.provider == provider]
    if endpoint_name:
        candidates = [e for e in candidates if e.name == endpoint_name]
    if not candidates:
        raise ConfigError(f"no {provider} endpoint{' named ' + endpoint_name if endpoint_name else ''} in the config")
    endpoint = candidates[0]
    host = config.server.host if config.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    send_url = url or f"http://{host}:{config.server.port}{endpoint.path}"
    base = config.server.public_url
    return Target(endpoint, send_url, f"{base}{endpoint.path}" if base else send_url)


def build(target: Target, word: str, message_id: str, error_code: str | None = None) -> SampleRequest:
    adapter = target.endpoint.adapter()
    word = adapter.aliases.get(word, word)
    if error_code is None and word in FAILURE_WORDS:
        error_code = adapter.failure_code
    # A stable, plausible account id per endpoint, so every simulated callback of it agrees.
    seed = hashlib.sha256(target.endpoint.name.encode()).hexdigest()
    request = adapter.sample(url=target.signed_url, word=word, message_id=message_id, account_seed=seed,
                             now=system_clock(),  # the gateway it goes to reads the wall clock too
                             error_code=error_code)
    return SampleRequest(request.method, target.send_url, request.headers, request.body)


def new_message_id(provider: str) -> str:
    return PROVIDERS[provider].new_message_id()


def plan(provider: str, scenario: str | None, word: str | None,
         error_code: str | None = None) -> Iterator[tuple[str, int, str | None]]:
    """(word, times, error code): a scenario's own code for a step, else --error-code."""
    if scenario:
        scenarios = PROVIDERS[provider].scenarios
        if scenario not in scenarios:
            raise ConfigError(f"{provider} has no scenario {scenario!r} (has: {', '.join(sorted(scenarios))})")
        for step in scenarios[scenario]:
            yield step[0], step[1], step[2] if len(step) == 3 else error_code
    elif word:
        yield word, 1, error_code


class Unreachable(Exception):
    """The request got no HTTP answer (nothing listening, reset, timed out)."""


class Sender:
    """Sends the plan's requests over one aiohttp session (the project's one HTTP client)."""

    def __init__(self, timeout: float = 10) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, request: SampleRequest) -> tuple[int, str]:
        """(HTTP status, body text) of the gateway's answer."""
        import aiohttp

        assert self._session is not None, "async with Sender() first"
        try:
            async with self._session.request(request.method, request.url, headers=request.headers,
                                             data=request.body or None, allow_redirects=False) as answer:
                return answer.status, (await answer.read()).decode(errors="replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
