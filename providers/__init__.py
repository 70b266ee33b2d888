"""The vendors, by their key in config.yaml. Adding one: its module, one line here, its tests."""

from __future__ import annotations

from dataclasses import replace

from gateway.model import StatusEvent
from providers.base import Provider
from providers.twilio import Twilio
from providers.vonage import Vonage
from providers.vonage_sms import VonageSMS

PROVIDERS: dict[str, type[Provider]] = {
    Twilio.key: Twilio,
    Vonage.key: Vonage,
    VonageSMS.key: VonageSMS,
}

# The events' provider names (a message-id namespace may be shared by two APIs of one vendor).
EVENT_PROVIDERS: tuple[str, ...] = tuple(sorted({cls.name for cls in PROVIDERS.values()}))



def with_reason(event: StatusEvent) -> StatusEvent:
    """An event stored before reasons existed (SPEC §9), with the reason its adapter gives it now;
    any other event as it is. Its id stays: the id never depended on the reason."""
    if event.reason is not None or not event.status.failure:
        return event
    for cls in PROVIDERS.values():
        if cls.name == event.provider and cls.wrote(event):
            return replace(event, reason=cls.reason(event))
    return event


__all__ = ["EVENT_PROVIDERS", "PROVIDERS", "Provider", "with_reason"]
