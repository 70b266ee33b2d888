"""The `forward:` section of config.yaml: the retry schedule, the attempt timeout, the subscriptions."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from gateway.model import Status

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# Every event type there is: a subscription's globs must match at least one, so a typo is an error.
RECEIVED_TYPE = "message.received"  # an incoming message (SPEC §8)
EVENT_TYPES: tuple[str, ...] = (*(f"message.status.{status.value}" for status in Status
                                  if status is not Status.RECEIVED), RECEIVED_TYPE)


def seconds(value: Any) -> float:
    """5, "5s", "5m", "2h", "1d", "250ms" as seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 5s, 5m, 2h")
    if isinstance(value, int | float):
        return float(value)
    match = DURATION.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration such as 5s, 5m, 2h")
    return float(match.group(1)) * UNITS[match.group(2)]


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than 0 s")
    return value


Duration = Annotated[float, BeforeValidator(seconds), AfterValidator(_positive)]


def webhook_secret(value: str) -> bytes:
    """A Standard Webhooks secret, `whsec_<base64>` of 24 to 64 random bytes, as its key bytes."""
    if not isinstance(value, str) or not value.startswith("whsec_"):
        raise ValueError("must start with whsec_ followed by base64 (Standard Webhooks)")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not valid base64 after whsec_") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError(f"must hold 24 to 64 bytes of key (it holds {len(key)})")
    return key


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _secrets(values: list[str]) -> tuple[bytes, ...]:
    if not values:
        raise ValueError("at least one secret is required")
    return tuple(webhook_secret(value) for value in values)


# A string or a list during a rotation: every secret signs each request.
WebhookSecrets = Annotated[tuple[bytes, ...], BeforeValidator(lambda v: _secrets(_as_list(v)))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SHAPES = {  # field → (the pattern it must match, what to tell the user)
    "name": (r"[a-z0-9_-]+", "must be lower-case letters, digits, '-' and '_'"),
    "url": (r"https?://[^/?#\s]+[^#\s]*", "must be an http(s) URL without a fragment"),
}


class Subscription(Strict):
    name: str
    url: str
    secret: WebhookSecrets
    events: tuple[str, ...] = ("*",)  # globs over the event type
    providers: tuple[str, ...] | None = None  # the events' provider names (twilio, vonage)
    endpoints: tuple[str, ...] | None = None  # configured endpoint names
    final_only: bool = False  # only events whose status is final
    include_raw: bool = False  # the provider's raw payload in data.raw

    @field_validator("name", "url")
    @classmethod
    def _shaped(cls, value: str, info: ValidationInfo) -> str:
        pattern, why = SHAPES[info.field_name or ""]
        if not re.fullmatch(pattern, value):
            raise ValueError(why)
        return value

    @field_validator("events")
    @classmethod
    def _globs_match_something(cls, globs: tuple[str, ...]) -> tuple[str, ...]:
        for glob in globs:
            if not any(fnmatch.fnmatchcase(kind, glob) for kind in EVENT_TYPES):
                raise ValueError(f"{glob!r} matches no event type"
                                 " (they are message.status.<status> and message.received)")
        return globs

    def __repr__(self) -> str:  # never the secrets, whatever prints it
        return f"Subscription(name={self.name!r}, url={self.url!r})"


class ForwardConfig(Strict):
    # Waits after attempts 1..7: 8 attempts over about 28 h.
    retry_schedule: tuple[Duration, ...] = Field(
        default=(5, 300, 1800, 7200, 18000, 36000, 36000), min_length=1)
    timeout: Duration = 15.0  # the whole attempt: connect, send and answer
    subscriptions: tuple[Subscription, ...] = Field(default=(), min_length=1)
