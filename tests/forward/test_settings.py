"""The `forward:` section: what it takes, and one clear line for each mistake (never a secret)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
from gateway.errors import ConfigError

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
ROTATED = "whsec_" + base64.b64encode(b"r" * 24).decode()
ENV = {"TWILIO_AUTH_TOKEN": "t" * 32, "CRM_SECRET": SECRET}


def document(tmp_path: Path, forward: Any, sinks: Any = None) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "endpoints": [{"name": "twilio-main", "provider": "twilio", "auth_token": "${TWILIO_AUTH_TOKEN}"}],
        "sinks": sinks or [{"type": "sqlite", "path": "gateway.db"}],
        "forward": forward,
    }))
    return path


def crm(**options: Any) -> dict[str, Any]:
    return {"name": "crm", "url": "https://crm.example.com/hooks/sms", "secret": "${CRM_SECRET}", **options}


def test_a_full_forward_section_loads(tmp_path: Path) -> None:
    config = load_config(document(tmp_path, {
        "retry_schedule": ["5s", "5m", "2h", 30, "1d"], "timeout": "250ms",
        "subscriptions": [crm(secret=["${CRM_SECRET}", ROTATED], events=["message.status.*"], providers=["twilio"],
                              endpoints=["twilio-main"], final_only=True, include_raw=True)],
    }), ENV)
    assert config.forward is not None
    assert config.forward.retry_schedule == (5, 300, 7200, 30, 86400)
    assert config.forward.timeout == 0.25
    (subscription,) = config.forward.subscriptions
    assert subscription.secret == (b"s" * 32, b"r" * 24)
    assert (subscription.final_only, subscription.include_raw, subscription.providers) == (True, True, ("twilio",))
    assert "s" * 32 not in repr(config.forward) and "r" * 24 not in repr(config.forward)


def test_defaults_follow_the_contract(tmp_path: Path) -> None:
    forward = load_config(document(tmp_path, {"subscriptions": [crm()]}), ENV).forward
    assert forward is not None
    assert forward.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)  # 8 attempts in ~28 h
    assert sum(forward.retry_schedule) / 3600 == pytest.approx(27.6, abs=0.1)
    assert forward.timeout == 15
    (subscription,) = forward.subscriptions
    assert (subscription.events, subscription.providers, subscription.endpoints) == (("*",), None, None)


@pytest.mark.parametrize(("forward", "sinks", "message"), [
    ({"subscriptions": [crm(), crm()]}, None, "subscription crm: the name is used twice"),
    ({"subscriptions": [crm(name="CRM")]}, None, "subscription CRM: name must be lower-case letters, digits, '-' and '_'"),
    ({"subscriptions": [crm(secret="plain-secret")]}, None,
     "subscription crm: secret must start with whsec_ followed by base64 (Standard Webhooks)"),
    ({"subscriptions": [crm(secret="whsec_" + base64.b64encode(b"x" * 16).decode())]}, None,
     "subscription crm: secret must hold 24 to 64 bytes of key (it holds 16)"),
    ({"subscriptions": [crm(secret="whsec_!!notbase64")]}, None, "subscription crm: secret is not valid base64"),
    ({"subscriptions": [crm(secret=[])]}, None, "subscription crm: secret at least one secret is required"),
    ({"subscriptions": [crm(events=["message.staus.*"])]}, None,
     "subscription crm: events 'message.staus.*' matches no event type"),
    ({"subscriptions": [crm(providers=["vonage-sms"])]}, None,
     "subscription crm: providers: 'vonage-sms' is not an events' provider (one of twilio, vonage"),
    ({"subscriptions": [crm(endpoints=["twilio-eu"])]}, None, "subscription crm: endpoints: no endpoint named 'twilio-eu'"),
    ({"subscriptions": [crm(url="ftp://crm.example.com")]}, None, "subscription crm: url must be an http(s) URL without a fragment"),
    ({"subscriptions": [crm(colour="blue")]}, None, "subscription crm: colour extra inputs are not permitted"),
    ({"subscriptions": []}, None, "forward.subscriptions: tuple should have at least 1 item"),
    ({"subscriptions": [crm()], "retry_schedule": ["soon"]}, None,
     "forward.retry_schedule.0: 'soon' is not a duration such as 5s, 5m, 2h"),
    ({"subscriptions": [crm()], "timeout": 0}, None, "forward.timeout: must be longer than 0 s"),
    ({"subscriptions": [crm()]}, [{"type": "log", "path": "-"}],
     "forward: needs a store sink (sqlite or postgres) to keep its outbox in"),
], ids=["twice", "name", "not-whsec", "short-key", "not-base64", "no-secret", "typo-glob", "config-key-as-provider",
        "unknown-endpoint", "url", "unknown-key", "none", "duration", "zero-timeout", "no-store"])
def test_each_mistake_is_one_line_without_the_secret(tmp_path: Path, forward: Any, sinks: Any, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(document(tmp_path, forward, sinks), ENV)
    assert str(refused.value).startswith(message), str(refused.value)
    assert SECRET.removeprefix("whsec_") not in str(refused.value)


def test_an_unset_subscription_secret_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^CRM_SECRET is not set \(forward, key forward.subscriptions\[0\].secret\)"):
        load_config(document(tmp_path, {"subscriptions": [crm()]}), {"TWILIO_AUTH_TOKEN": "t" * 32})
