"""Provider adapters, by the name used in config.yaml."""

from __future__ import annotations

from providers.base import Provider
from providers.twilio import Twilio
from providers.vonage import Vonage

PROVIDERS: dict[str, type[Twilio] | type[Vonage]] = {"twilio": Twilio, "vonage": Vonage}

__all__ = ["PROVIDERS", "Provider"]
