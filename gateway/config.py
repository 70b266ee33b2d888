"""load_config(): config.yaml with ${VAR} / ${VAR:-default}, validated by pydantic at the edge.

Every error is one line naming the key, and the endpoint when there is one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import ConfigError
from gateway.forward.settings import ForwardConfig
from gateway.sinks.settings import SINK_TYPES, SinkConfig, SinkSettings, SQLiteSinkConfig
from providers import EVENT_PROVIDERS, PROVIDERS
from providers.base import Provider

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
RESERVED = ("/healthz", "/readyz", "/metrics", "/v1")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None  # base URL the providers call; None = the request's own URL
    max_body_bytes: int = Field(default=65536, gt=0)
    api_token: str | None = None  # bearer token for /v1; None = /v1 answers 404
    # Peers whose X-Forwarded-Proto/Host are believed when public_url is not set.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @field_validator("public_url", "api_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/?#]+(/[^?#]*)?$", value):
            raise ValueError("must be an http(s) URL without query or fragment, e.g. https://gw.example.com")
        return value.rstrip("/") if value else value


class QuarantineConfig(Strict):
    """SPEC §11: per endpoint, the newest refused callbacks, at most this many and this many bytes
    (body, URL and the headers kept); the oldest go first. max_count 0 keeps none."""

    max_count: int = Field(default=1000, ge=0)
    max_bytes: int = Field(default=16 * 1024 * 1024, gt=0)


class Document(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    endpoints: list[dict[str, Any]]
    # An empty list would acknowledge every callback and keep none of them.
    sinks: list[SinkConfig] = Field(default_factory=lambda: _embedded_default(), min_length=1)
    forward: ForwardConfig | None = None
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig)


def _embedded_default() -> list[SinkConfig]:
    return [SQLiteSinkConfig(type="sqlite")]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    provider: str
    path: str
    settings: BaseModel  # the provider's own keys, validated by its Settings model

    def adapter(self) -> Provider:
        cls = PROVIDERS[self.provider]
        return cls(self.name, self.settings)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    endpoints: tuple[Endpoint, ...]
    sinks: tuple[SinkSettings, ...]
    path: Path | None = None
    forward: ForwardConfig | None = None  # None: nothing is forwarded
    quarantine: QuarantineConfig = QuarantineConfig()

    def endpoint(self, name: str) -> Endpoint:
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise ConfigError(f"no endpoint named {name!r} (have: {', '.join(e.name for e in self.endpoints)})")


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, then ./config.yaml, then $GATEWAY_CONFIG (docs/events.md#delivery)."""
    if explicit:
        return Path(explicit)
    local = Path("config.yaml")
    if local.exists() or not os.environ.get("GATEWAY_CONFIG"):
        return local
    return Path(os.environ["GATEWAY_CONFIG"])


def read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc


def required_variables(tree: Any) -> set[str]:
    """Variables written ${VAR} with no default anywhere in the document."""
    found: set[str] = set()
    _walk(tree, lambda text: found.update(m.group(1) for m in VARIABLE.finditer(text) if m.group(2) is None))
    return found


def _walk(tree: Any, visit: Any) -> None:
    if isinstance(tree, str):
        visit(tree)
    elif isinstance(tree, dict):
        for value in tree.values():
            _walk(value, visit)
    elif isinstance(tree, list):
        for value in tree:
            _walk(value, visit)


def expand(tree: Any, env: Mapping[str, str], where: str, key: str = "") -> Any:
    if isinstance(tree, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = env.get(name)
            if not value:  # set but empty counts as unset: an empty secret is no secret
                if default is None:
                    raise ConfigError(f"{name} is not set ({where}, key {key})")
                return default
            return value

        return VARIABLE.sub(substitute, tree)
    if isinstance(tree, dict):
        return {k: expand(v, env, where, f"{key}.{k}" if key else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand(v, env, where, f"{key}[{i}]") for i, v in enumerate(tree)]
    return tree


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    source = resolve_path(path)
    config = parse_config(read_document(source), os.environ if env is None else env)
    sinks = tuple(sink.resolved(source.parent) for sink in config.sinks)
    _one_sink_per_target(sinks)
    return Config(server=config.server, endpoints=config.endpoints, sinks=sinks, path=source, forward=config.forward,
                  quarantine=config.quarantine)


def _one_sink_per_target(sinks: tuple[SinkSettings, ...]) -> None:
    """Two sinks on one file or database: a second store would call every new event a duplicate, a
    log sink would write its lines into the SQLite file. Paths are compared once resolved."""
    seen: dict[str, int] = {}
    for index, sink in enumerate(sinks):
        where, what = sink.target()
        if where in seen:
            raise ConfigError(f"sinks.{index}: writes to the same {what} as sinks.{seen[where]}")
        seen[where] = index


def parse_config(tree: Any, env: Mapping[str, str]) -> Config:
    if not isinstance(tree, dict):
        raise ConfigError("the config must be a YAML mapping with server, endpoints and sinks")
    raw_endpoints = tree.get("endpoints")
    if not isinstance(raw_endpoints, list) or not raw_endpoints:
        raise ConfigError("endpoints: at least one endpoint is required")
    names = [e.get("name") if isinstance(e, dict) else None for e in raw_endpoints]
    expanded = {
        key: expand(value, env, "server settings" if key == "server" else key, key)
        for key, value in tree.items() if key != "endpoints"
    }
    expanded["endpoints"] = [
        expand(e, env, f"endpoint {names[i] or i}") for i, e in enumerate(raw_endpoints)
    ]
    try:
        document = Document.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, names, tree)) from None
    endpoints = tuple(_endpoint(i, raw) for i, raw in enumerate(document.endpoints))
    seen_paths: dict[str, str] = {}
    seen_names: set[str] = set()
    for endpoint in endpoints:
        if endpoint.name in seen_names:
            raise ConfigError(f"endpoint {endpoint.name}: the name is used twice")
        seen_names.add(endpoint.name)
        if endpoint.path in seen_paths:
            raise ConfigError(
                f"endpoint {endpoint.name}: path {endpoint.path} is already used by endpoint "
                f"{seen_paths[endpoint.path]}"
            )
        seen_paths[endpoint.path] = endpoint.name
    if document.forward is not None:
        _check_forward(document.forward, endpoints, document.sinks)
    return Config(server=document.server, endpoints=endpoints, sinks=tuple(document.sinks), forward=document.forward,
                  quarantine=document.quarantine)


def _check_forward(forward: ForwardConfig, endpoints: tuple[Endpoint, ...], sinks: list[SinkConfig]) -> None:
    """What pydantic cannot see alone: names that must be unique or must exist elsewhere in the config."""
    if not any(sink.store for sink in sinks):
        raise ConfigError("forward: needs a store sink (sqlite or postgres) to keep its outbox in")
    seen: set[str] = set()
    names = {endpoint.name for endpoint in endpoints}
    for subscription in forward.subscriptions:
        where = f"subscription {subscription.name}"
        if subscription.name in seen:
            raise ConfigError(f"{where}: the name is used twice")
        seen.add(subscription.name)
        for provider in subscription.providers or ():
            if provider not in EVENT_PROVIDERS:
                raise ConfigError(f"{where}: providers: {provider!r} is not an events' provider "
                                  f"(one of {', '.join(EVENT_PROVIDERS)}; to pick one endpoint, use endpoints)")
        for name in subscription.endpoints or ():
            if name not in names:
                raise ConfigError(f"{where}: endpoints: no endpoint named {name!r}")


def _endpoint(index: int, raw: dict[str, Any]) -> Endpoint:
    options = dict(raw)
    name = options.pop("name", None)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"endpoints[{index}]: name is required (letters, digits, '-', '_', '.')")
    provider = options.pop("provider", None)
    if provider not in PROVIDERS:
        raise ConfigError(
            f"endpoint {name}: unknown provider {provider!r} (known: {', '.join(sorted(PROVIDERS))})"
        )
    path = options.pop("path", None) or f"/webhooks/{provider}/{name}"
    if not isinstance(path, str) or not re.fullmatch(r"/[A-Za-z0-9._~/-]*", path) or "//" in path:
        raise ConfigError(f"endpoint {name}: path must start with / and hold only URL-safe characters")
    if any(path == r or path.startswith(r + "/") for r in RESERVED):
        raise ConfigError(f"endpoint {name}: path {path} is reserved for the gateway itself")
    try:
        settings = PROVIDERS[provider].Settings.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "settings"
        message = "is missing" if first["type"] == "missing" else first["msg"].lower().removeprefix("value error, ")
        raise ConfigError(f"endpoint {name}: {key} {message}") from None
    return Endpoint(name=name, provider=provider, path=path, settings=settings)


def _subscription_name(tree: Any, index: int) -> str:
    try:
        name = tree["forward"]["subscriptions"][index]["name"]
    except (KeyError, IndexError, TypeError):
        name = None
    return f"subscription {name}" if isinstance(name, str) else f"forward.subscriptions[{index}]"


def _describe(exc: ValidationError, names: list[Any], tree: Any = None) -> str:
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    message = "is missing" if first["type"] == "missing" else first["msg"].lower().removeprefix("value error, ")
    if loc[:2] == ["forward", "subscriptions"] and len(loc) > 2 and loc[2].isdigit():
        # As an endpoint's: "subscription crm: secret must start with whsec_ …", the message as written.
        text = first["msg"].removeprefix("Value error, ")
        text = "is missing" if first["type"] == "missing" else text[:1].lower() + text[1:]
        key = ".".join(loc[3:4]) or "settings"
        return f"{_subscription_name(tree, int(loc[2]))}: {key} {text}"
    if first["type"] == "union_tag_invalid":
        message = f"type must be one of {', '.join(SINK_TYPES)}"
    elif first["type"] == "too_short" and loc == ["sinks"]:
        message = "at least one sink is required (leave the key out for the SQLite default)"
    return f"{'.'.join(loc) or 'config'}: {message}"
