"""config.yaml loading: env expansion, defaults, and one clear line per mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
from gateway.sinks.settings import SQLiteSinkConfig
from gateway.errors import ConfigError

ENV = {"TWILIO_AUTH_TOKEN": "t" * 32, "VONAGE_SIGNATURE_SECRET": "v" * 32, "VONAGE_SMS_SIGNATURE_SECRET": "s" * 32}


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def endpoints(**twilio: Any) -> list[dict[str, Any]]:
    return [{"name": "twilio-main", "provider": "twilio", "auth_token": "${TWILIO_AUTH_TOKEN}", **twilio}]


def test_shipped_config_loads_with_the_variables_set() -> None:
    config = load_config(Path(__file__).parents[1] / "config.yaml", ENV)
    assert [(e.name, e.provider, e.path) for e in config.endpoints] == [
        ("twilio-main", "twilio", "/webhooks/twilio/main"), ("vonage-main", "vonage", "/webhooks/vonage/main"),
        ("vonage-sms-main", "vonage-sms", "/webhooks/vonage-sms/main")]
    assert config.server.public_url == "http://localhost:8000"
    assert config.server.api_token is None


def test_variables_and_defaults_expand(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "server": {"port": "${PORT:-9000}", "public_url": "${URL:-https://a.example}/gw", "api_token": "${TOKEN:-}"},
        "endpoints": endpoints(auth_token=["${TWILIO_AUTH_TOKEN}", "${OLD_TOKEN:-old}"]),
    })
    config = load_config(path, {**ENV, "URL": "https://b.example"})
    assert (config.server.port, config.server.public_url, config.server.api_token) == (
        9000, "https://b.example/gw", None)
    assert config.endpoints[0].settings.auth_token == ("t" * 32, "old")  # type: ignore[attr-defined]


def test_endpoint_path_defaults_and_sqlite_path_is_beside_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, {"endpoints": [{"name": "eu", "provider": "vonage",
                                           "signature_secret": "${VONAGE_SIGNATURE_SECRET}"}]})
    config = load_config(path, ENV)
    assert config.endpoints[0].path == "/webhooks/vonage/eu"
    assert config.sinks == (SQLiteSinkConfig(type="sqlite", path=str(tmp_path / "gateway.db")),)


ERRORS = {
    "unset-variable": ({"endpoints": endpoints()}, {}, "TWILIO_AUTH_TOKEN is not set (endpoint twilio-main, key auth_token)"),
    "empty-variable": ({"endpoints": endpoints()}, {"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN is not set"),
    "empty-secret": ({"endpoints": endpoints(auth_token="")}, ENV, "endpoint twilio-main: auth_token secret is missing"),
    "missing-secret": ({"endpoints": [{"name": "a", "provider": "twilio"}]}, ENV, "endpoint a: auth_token is missing"),
    "unknown-provider": ({"endpoints": [{"name": "a", "provider": "plivo"}]}, ENV, "endpoint a: unknown provider 'plivo'"),
    "duplicate-path": ({"endpoints": [*endpoints(path="/x"), {"name": "b", "provider": "vonage", "path": "/x",
                                                              "signature_secret": "s"}]}, ENV,
                       "endpoint b: path /x is already used by endpoint twilio-main"),
    "duplicate-name": ({"endpoints": endpoints() * 2}, ENV, "endpoint twilio-main: the name is used twice"),
    "unknown-key": ({"endpoints": endpoints(auth_tokens="x")}, ENV, "endpoint twilio-main: auth_tokens"),
    "reserved-path": ({"endpoints": endpoints(path="/metrics")}, ENV, "reserved"),
    "no-endpoints": ({"endpoints": []}, ENV, "at least one endpoint"),
    "no-sinks": ({"endpoints": endpoints(), "sinks": []}, ENV, "sinks: at least one sink is required"),
    "same-sqlite-twice": ({"endpoints": endpoints(), "sinks": [{"type": "sqlite", "path": "g.db"},
                                                                {"type": "sqlite", "path": "./g.db"}]},
                          ENV, "sinks.1: writes to the same file as sinks.0"),
    "same-postgres-twice": ({"endpoints": endpoints(),
                             "sinks": [{"type": "postgres", "dsn": "postgresql://u:s3cr3t-pw@h/d"}] * 2},
                            ENV, "sinks.1: writes to the same database as sinks.0"),
    "log-into-sqlite": ({"endpoints": endpoints(),
                         "sinks": [{"type": "sqlite"}, {"type": "log", "path": "gateway.db"}]},
                        ENV, "sinks.1: writes to the same file as sinks.0"),
    "stdout-twice": ({"endpoints": endpoints(),
                      "sinks": [{"type": "log"}, {"type": "sqlite"}, {"type": "log", "path": "-"}]},
                     ENV, "sinks.2: writes to the same standard output as sinks.0"),
    "bad-sink": ({"endpoints": endpoints(), "sinks": [{"type": "kafka"}]}, ENV, "sinks.0"),
    "bad-public-url": ({"server": {"public_url": "gw.example.com"}, "endpoints": endpoints()}, ENV, "public_url"),
    "bad-age": ({"endpoints": [{"name": "v", "provider": "vonage", "signature_secret": "s", "max_token_age": 0}]},
                ENV, "endpoint v: max_token_age"),
}


@pytest.mark.parametrize(("document", "env", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_mistakes_stop_start_up_with_one_clear_line(
    tmp_path: Path, document: dict[str, Any], env: dict[str, str], message: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, document), env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    document = {"endpoints": endpoints(shared_keys="${TWILIO_AUTH_TOKEN}")}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, document), ENV)
    assert ENV["TWILIO_AUTH_TOKEN"] not in str(caught.value)


def test_a_repeated_database_is_named_by_position_not_by_its_dsn(tmp_path: Path) -> None:
    dsn = "postgresql://gateway:s3cr3t-pw@db.internal/gateway"
    document = {"endpoints": endpoints(), "sinks": [{"type": "postgres", "dsn": dsn}] * 2}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, document), ENV)
    assert "sinks.1" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "endpoints: [\n"), ENV)


def test_the_readme_configuration_block_is_the_shipped_config_yaml() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    start = readme.index("```yaml\n", readme.index("## Configuration")) + len("```yaml\n")
    assert readme[start:readme.index("```\n", start)] == (root / "config.yaml").read_text()


def test_the_shipped_config_yaml_has_an_endpoint_for_each_api_it_documents() -> None:
    """So `simulate twilio|vonage|vonage-sms` works on a fresh checkout (a vendor added later need not be there)."""
    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml", ENV)
    assert [endpoint.provider for endpoint in config.endpoints] == ["twilio", "vonage", "vonage-sms"]
    assert [sink.type for sink in config.sinks] == ["log", "sqlite"]
