"""The vendors, by their key in config.yaml. Adding one: its module, one line here, its tests."""

from __future__ import annotations

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

__all__ = ["EVENT_PROVIDERS", "PROVIDERS", "Provider"]
