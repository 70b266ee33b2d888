"""What every provider adapter is: verify an Inbound request, then parse it into a StatusEvent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from gateway.model import Fragment, Reason, Status, StatusEvent, Unread, utc_iso

Fields = Mapping[str, Any]  # the provider's payload, already authenticated


@dataclass(frozen=True, slots=True)
class Inbound:
    """One callback as the provider sent it; built once in webhook.py, no Starlette types inside."""

    method: str
    url: str  # the URL the provider signed: public_url + path + raw query
    headers: Mapping[str, str]  # lower-cased names; a repeated header is joined with ", "
    body: bytes
    received_at: datetime  # injected "now", so replay windows are testable without freezing time
    query: str = ""  # raw query string, as received

    @property
    def media_type(self) -> str:
        return split_content_type(self.headers.get("content-type", ""))[0]


def split_content_type(value: str) -> tuple[str, str]:
    """(media type, lower-cased, without parameters; the parameters as sent)."""
    media_type, _, parameters = value.partition(";")
    return media_type.strip().lower(), parameters


@dataclass(frozen=True, slots=True)
class SampleRequest:
    """A request as the provider would send it, for `status-gateway simulate`."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


# One message's callbacks: (the provider's word, sent how many times[, its error code]).
Scenario = list[tuple[str, int] | tuple[str, int, str]]


Parsed = StatusEvent | Fragment | Unread | None  # None: genuine, nothing to keep (Twilio's "receiving")


class Provider(Protocol):
    """Everything the gateway knows about one vendor; the registry in providers/__init__.py lists them.

    One instance per configured endpoint, built from its validated Settings. Nothing outside
    providers/ names a vendor: the config, the CLI and `simulate` read these attributes.
    """

    key: ClassVar[str]  # the `provider:` value in config.yaml ("vonage-sms")
    name: ClassVar[str]  # the events' provider: the message-id namespace ("vonage" for both Vonage APIs)
    ack: ClassVar[tuple[bytes, str]]  # (body, media type) the provider expects on success
    methods: ClassVar[tuple[str, ...]]
    media_types: ClassVar[frozenset[str]]  # accepted Content-Types for a POST
    signature_headers: ClassVar[tuple[str, ...]]  # what verify() reads besides the body: kept when refused
    Settings: ClassVar[type[Settings]]  # its endpoint keys in config.yaml
    # `simulate`: a normalized word typed for this vendor ("sent" → "submitted"), the error code a
    # failure gets by default, and realistic sequences of one message's callbacks.
    aliases: ClassVar[dict[str, str]]
    failure_code: ClassVar[str]
    scenarios: ClassVar[dict[str, Scenario]]

    def __init__(self, endpoint: str, settings: Any) -> None: ...

    def verify(self, inbound: Inbound) -> Fields:
        """Prove the request came from the provider; return the authenticated fields.

        Raises InvalidSignature, InvalidToken, Unsigned or Malformed. Nothing is parsed before this.
        """
        ...

    def explain(self, inbound: Inbound, others: Sequence[Provider]) -> list[str]:
        """Why this refused request does not verify, and what in config.yaml would change that:
        one plain sentence per finding, never a secret. `others`: the config's other endpoints of
        this vendor, whose secrets may be the ones that signed it (a URL pasted into the wrong account)."""
        ...

    def parse(self, fields: Fields, inbound: Inbound) -> Parsed:
        """The normalized event, a Fragment of one, or an Unread callback; None for a callback with
        nothing to keep. Raises Malformed for what is broken (a status without its message id)."""
        ...

    @staticmethod
    def wrote(event: StatusEvent) -> bool:
        """Whether this adapter made the stored event (two adapters may share an events' name)."""
        ...

    @staticmethod
    def reason(event: StatusEvent) -> Reason | None:
        """The event's reason from its status and error code (SPEC §9), by this vendor's table, as
        parse() gives it; asked on read for events stored before reasons existed."""
        ...

    def join(self, parts: Sequence[Fragment]) -> StatusEvent:
        """The one event of a message whose parts are all here (in order, one of each number).
        Asked only of an adapter whose parse returns Fragments."""
        ...

    def answer(self, event: StatusEvent, inbound: Inbound) -> tuple[bytes, str] | None:
        """(body, media type) answering this stored (or already stored) event, when it is not
        `ack`: Twilio's TwiML reply to an incoming message (SPEC §8). None: the ack."""
        ...

    @staticmethod
    def setup(url: str) -> str:
        """What `urls` prints under the endpoint's URL: where to paste it at the vendor, and why."""
        ...

    @staticmethod
    def new_message_id() -> str:
        """A fresh message id in the vendor's own shape, for `simulate`."""
        ...

    def sample(self, *, url: str, word: str, message_id: str, account_seed: str, now: datetime,
               error_code: str | None = None) -> SampleRequest:
        """A callback as the vendor would send it for `word`, signed with this endpoint's first secret.

        `account_seed` makes a stable, plausible account id per endpoint.
        """
        ...


# A provider's error codes, as data: code → (category, permanent, the provider's title). A category
# of None is a code that is no failure (a warning on a delivered message, the SMS API's 0).
Reasons = dict[str, tuple[str | None, bool, str]]


def reason_from(table: Reasons, status: Status, code: str | None, message: str | None,
                fallbacks: dict[Status, str]) -> Reason | None:
    """The reason of a failure status (SPEC §9); None on any other, whatever code it carries.

    A code in the table gives its category; no code (or a warning's) gives the status's fallback
    category, temporary; a code no table knows gives `unknown`, temporary, counted as unmapped.
    """
    if not status.failure:
        return None
    found = table.get(code) if code else None
    if found is not None and found[0] is not None:
        return Reason(found[0], found[1], message or found[2])
    if code and found is None:
        return Reason("unknown", False, message, mapped=False)
    return Reason(fallbacks.get(status, "unknown"), False, message)


def described(table: Reasons, code: str | None) -> str | None:
    """The provider's title of a code, for error_message when the callback says nothing itself."""
    found = table.get(code) if code else None
    return found[2] if found else None


def text_of(value: Any) -> str | None:
    """A JSON field as text: numbers too (Vonage sends `error.title` as 1000 or "1000"), not booleans."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        return str(value) or None
    return None


def carrier_time(value: str | None, *, not_after: str) -> str | None:
    """A carrier's YYMMDDhhmm receipt time (Twilio RawDlrDoneDate, Vonage scts), which names no zone:
    read as UTC, and never later than `not_after` (the vendor's own push time, or our arrival).

    A carrier east of UTC reads hours late as UTC; uncapped, such a time could sit after the push
    that reported it, and a later occurred_at wins ties in the precedence rule (docs/events.md).
    """
    if not value:
        return None
    try:
        moment = utc_iso(datetime.strptime(value, "%y%m%d%H%M").replace(tzinfo=timezone.utc))
    except ValueError:
        return None
    return min(moment, not_after)


def _as_tuple(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    return value


def _non_empty(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values or any(not v for v in values):
        raise ValueError("secret is missing or empty")
    return values


# A secret field takes a string or a list of strings (rotation: every one is tried).
Secrets = Annotated[tuple[str, ...], BeforeValidator(_as_tuple), AfterValidator(_non_empty)]


class Settings(BaseModel):
    """Base of each provider's own endpoint keys; unknown keys are a start-up error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
