"""/v1/stats and `status-gateway report` through the whole app: signed callbacks of both vendors in,
the figures out (the figures' rules themselves: tests/sinks/test_stats.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cli import main
from gateway.config import load_config
from tests.conftest import API_TOKEN, ENV, PUBLIC_URL, clock, config_document
from tests.signing import TWILIO_PATH, VONAGE_PATH, twilio_fields, twilio_request, vonage_payload, vonage_request

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> Any:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_document(tmp_path)))
    with TestClient(create_app(load_config(tmp_path / "config.yaml", ENV), clock=clock), base_url=PUBLIC_URL) as c:
        yield c


def feed(client: TestClient) -> None:
    """Twilio: 3 messages to the US (2 delivered, 1 undelivered 30003) and 1 to France, delivered.
    Vonage: 2 messages to GB, one delivered, one rejected 1240 (opted out)."""
    for index, (to, ending, code) in enumerate([("+14155550100", "delivered", None), ("+14155550101", "delivered", None),
                                                ("+14155550102", "undelivered", "30003"),
                                                ("+33612345678", "delivered", None)]):
        sid = f"SM{index:032d}"
        for word in ("sent", ending):
            extra = {"ErrorCode": code} if code and word == ending else {}
            headers, body = twilio_request(twilio_fields(word, sid=sid, To=to, **extra))
            assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200
    for index, (ending, error) in enumerate([("delivered", None), ("rejected", {"title": 1240})]):
        uuid_ = f"aaaaaaaa-bbbb-cccc-dddd-{index:012d}"
        for word in ("submitted", ending):
            payload = vonage_payload(word, uuid_, **({"error": error} if error and word == ending else {}))
            headers, body = vonage_request(payload)
            assert client.post(VONAGE_PATH, headers=headers, content=body).status_code == 200


def test_stats_by_provider_and_by_country(client: TestClient) -> None:
    feed(client)
    answer = client.get("/v1/stats", headers=AUTH).json()
    assert answer["by"] == "provider" and answer["since"] is None
    groups = {g["key"]: g for g in answer["groups"]}
    assert groups["twilio"]["messages"] == 4 and groups["twilio"]["statuses"] == {"delivered": 3, "undelivered": 1}
    assert groups["twilio"]["delivery_rate"] == 0.75
    assert groups["twilio"]["reasons"] == [{"category": "unreachable", "messages": 1}]
    assert groups["twilio"]["time_to_deliver"]["messages"] == 3
    assert groups["vonage"]["delivery_rate"] == 0.5
    assert groups["vonage"]["reasons"] == [{"category": "opted_out", "messages": 1}]
    by_country = {g["key"]: g["messages"] for g in client.get("/v1/stats?by=country", headers=AUTH).json()["groups"]}
    assert by_country == {"US": 3, "FR": 1, "GB": 2}
    only = client.get("/v1/stats?by=country&provider=vonage", headers=AUTH).json()["groups"]
    assert [(g["key"], g["messages"]) for g in only] == [("GB", 2)]
    assert client.get("/v1/stats?since=1h", headers=AUTH).json()["groups"] != []  # the test clock's hour
    assert client.get("/v1/stats?until=2000-01-01T00:00:00Z", headers=AUTH).json()["groups"] == []


@pytest.mark.parametrize("query", ["by=colour", "since=yesterday", "until=7x"])
def test_bad_stats_queries_are_refused(client: TestClient, query: str) -> None:
    answer = client.get(f"/v1/stats?{query}", headers=AUTH)
    assert answer.status_code == 400 and answer.json()["error"] == "malformed"


def test_stats_need_the_token(client: TestClient) -> None:
    assert client.get("/v1/stats").status_code == 401


def test_report_puts_the_vendors_side_by_side(client: TestClient, tmp_path: Path) -> None:
    feed(client)
    config = str(tmp_path / "config.yaml")
    # The test clock is in 2031; --since is read against the wall clock, so ask for all of it.
    text = CliRunner().invoke(main, ["report", "--since", "2000-01-01T00:00:00Z", "--config", config], env=ENV)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    header = next(line for line in lines if line.startswith("provider"))
    assert header.split()[:5] == ["provider", "messages", "delivered", "failed", "rate"]
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 2:]}
    assert rows["twilio"][1:5] == ["4", "3", "1", "75.0%"] and rows["vonage"][1:5] == ["2", "1", "1", "50.0%"]
    assert "unreachable (1)" in text.output and "opted_out (1)" in text.output
    by_country = CliRunner().invoke(main, ["report", "--since", "2000-01-01T00:00:00Z", "--by", "country", "--json",
                                           "--config", config], env=ENV)
    figures = orjson.loads(by_country.output)
    assert sorted((g["key"], g["provider"], g["messages"]) for g in figures["groups"]) == [
        ("FR", "twilio", 1), ("GB", "vonage", 2), ("US", "twilio", 3)]


def test_report_on_an_empty_store_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_document(tmp_path)))
    with TestClient(create_app(load_config(tmp_path / "config.yaml", ENV), clock=clock), base_url=PUBLIC_URL):
        pass  # creates the store
    text = CliRunner().invoke(main, ["report", "--config", str(tmp_path / "config.yaml")], env=ENV)
    assert text.exit_code == 0 and "simulate twilio --scenario lifecycle" in text.output
