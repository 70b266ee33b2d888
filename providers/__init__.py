"""Provider adapters, by the name used in config.yaml."""

from __future__ import annotations

from providers.base import Provider
from providers.twilio import Twilio
from providers.vonage import Vonage
from providers.vonage_sms import VonageSMS

PROVIDERS: dict[str, type[Twilio] | type[Vonage] | type[VonageSMS]] = {
    "twilio": Twilio, "vonage": Vonage, "vonage-sms": VonageSMS,
}

__all__ = ["PROVIDERS", "Provider"]
