"""The dispatcher against a real subscriber on loopback, with the retry schedule scaled down:
every request verifies with the Standard Webhooks library, and each answer does what SPEC §7 says."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import standardwebhooks
import yaml
from click.testing import CliRunner
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cli import free_port, main
from gateway.config import load_config
from gateway.forward.dispatcher import Dispatcher
from gateway.load import BUSY, BUSY_SHARE, CallbackLoad
from gateway.forward.settings import ForwardConfig
from gateway.sinks.base import Attempt, Claimed
from tests.conftest import API_TOKEN, ENV, PUBLIC_URL, config_document, wait_until
from tests.forward.receiver import Answer, Receiver, serve
from tests.signing import TWILIO_PATH, twilio_fields, twilio_request

SECRET = "whsec_" + base64.b64encode(b"d" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"e" * 32).decode()


def gateway(tmp_path: Path, url: str, *, schedule: list[float] | None = None, timeout: float = 1.0) -> TestClient:
    """The whole app in-process; its dispatcher runs on the app's loop and sends to `url`."""
    document = config_document(tmp_path)
    document["forward"] = {
        "retry_schedule": schedule or [0.05, 0.05, 0.05], "timeout": timeout,
        "subscriptions": [{"name": "crm", "url": url, "secret": [SECRET, OLD_SECRET]}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    # The wall clock: the requests' webhook-timestamp is checked against it by the verifier.
    return TestClient(create_app(load_config(tmp_path / "config.yaml", ENV)), base_url=PUBLIC_URL)


def callback(client: TestClient, sid: str = "SM" + "a" * 32, status: str = "delivered") -> None:
    headers, body = twilio_request(twilio_fields(status, sid=sid))
    assert client.post(TWILIO_PATH, headers=headers, content=body).status_code == 200


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    return sqlite3.connect(tmp_path / "gateway.db").execute(sql).fetchall()


def metric(client: TestClient, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rpartition(" ")[2])
    return 0.0


def states(tmp_path: Path) -> list[str]:
    return [state for (state,) in rows(tmp_path, "SELECT state FROM deliveries ORDER BY created_at")]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    subscriber = Receiver()
    up = serve(subscriber)
    yield subscriber
    up.stop()


def test_500_500_200_is_delivered_on_the_third_attempt_with_one_webhook_id(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script += [Answer(500), Answer(500)]
    series = ['gateway_forward_attempts_total{outcome="retrying",subscription="crm"}',
              'gateway_forward_attempts_total{outcome="delivered",subscription="crm"}',
              'gateway_forward_latency_seconds_count{subscription="crm"}']
    with gateway(tmp_path, receiver.url) as client:
        before = [metric(client, name) for name in series]  # the registry is the process's: deltas
        callback(client)
        wait_until(lambda: states(tmp_path) == ["delivered"])
        assert [metric(client, name) - was for name, was in zip(series, before, strict=True)] == [2, 1, 1]
    ((event_id,),) = rows(tmp_path, "SELECT id FROM events")
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event_id}
    for request in receiver.requests:  # each rotated secret alone verifies every attempt
        for secret in (SECRET, OLD_SECRET):
            sent = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
            assert (sent["type"], sent["data"]["id"]) == ("message.status.delivered", event_id)
            assert sent["data"]["current"]["status"] == "delivered" and "raw" not in sent["data"]
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes on every attempt
    assert rows(tmp_path, "SELECT attempt, http_status FROM attempts ORDER BY attempt") == [(1, 500), (2, 500), (3, 200)]


def test_410_disables_the_subscription(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script.append(Answer(410))
    with gateway(tmp_path, receiver.url) as client:
        callback(client, "SM" + "1" * 32)
        wait_until(lambda: states(tmp_path) == ["disabled"])
        callback(client, "SM" + "2" * 32)  # after the 410: kept, never sent
        wait_until(lambda: states(tmp_path) == ["disabled", "disabled"])
    assert len(receiver.requests) == 1
    assert rows(tmp_path, "SELECT name, reason FROM disabled_subscriptions") == [("crm", "HTTP 410")]


def test_retry_after_of_a_429_is_honoured(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script.append(Answer(429, (("Retry-After", "1"),)))
    with gateway(tmp_path, receiver.url) as client:
        callback(client)
        wait_until(lambda: states(tmp_path) == ["delivered"])
    first, second = receiver.requests
    assert second.at - first.at >= 1.0  # not the schedule's 0.05 s


def test_a_redirect_is_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    elsewhere = receiver.url.replace("/hooks", "/elsewhere")
    receiver.script.append(Answer(302, (("Location", elsewhere),)))
    with gateway(tmp_path, receiver.url) as client:
        callback(client)
        wait_until(lambda: states(tmp_path) == ["delivered"])
    assert [r.path for r in receiver.requests] == ["/hooks", "/hooks"]  # retried, never sent to the Location
    assert rows(tmp_path, "SELECT http_status FROM attempts ORDER BY attempt") == [(302,), (200,)]


def test_a_dripping_answer_is_cut_at_the_attempts_timeout(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script.append(Answer(200, drip=0.2))  # 16 bytes, 0.2 s apart: 3.2 s in all
    with gateway(tmp_path, receiver.url, timeout=0.5) as client:
        callback(client)
        wait_until(lambda: states(tmp_path) == ["delivered"])
    (first, second) = rows(tmp_path, "SELECT http_status, error, duration_ms FROM attempts ORDER BY attempt")
    assert first[0] is None and first[1] == "no complete answer within 0.5 s"
    assert first[2] < 3000  # cut at the deadline, not when the receiver was done
    assert second[:2] == (200, None)


def test_a_refused_connection_is_retried_then_failed(tmp_path: Path) -> None:
    with gateway(tmp_path, f"http://127.0.0.1:{free_port()}/hooks", schedule=[0.05, 0.05]) as client:
        callback(client)
        wait_until(lambda: states(tmp_path) == ["failed"])
    attempts = rows(tmp_path, "SELECT attempt, http_status, error FROM attempts ORDER BY attempt")
    assert [a[0] for a in attempts] == [1, 2, 3]  # the first, then one per wait of the schedule
    assert all(a[1] is None and "Connect" in a[2] for a in attempts)


def test_a_subscriber_that_is_down_costs_the_providers_nothing_and_gets_everything_later(tmp_path: Path) -> None:
    subscriber = Receiver()  # its port is chosen, nothing listens yet
    with gateway(tmp_path, subscriber.url, schedule=[0.2] * 50) as client:
        for index in range(5):
            callback(client, f"SM{index:032d}")
        assert client.get("/readyz").status_code == 200
        wait_until(lambda: rows(tmp_path, "SELECT count(*) FROM attempts")[0][0] >= 5)  # tried, refused
        wait_until(lambda: metric(client, "gateway_forward_pending") == 5)
        assert metric(client, "gateway_forward_oldest_pending_seconds") > 0
        up = serve(subscriber)
        try:
            wait_until(lambda: states(tmp_path) == ["delivered"] * 5)
            wait_until(lambda: metric(client, "gateway_forward_pending") == 0)
        finally:
            up.stop()
    ids = {event_id for (event_id,) in rows(tmp_path, "SELECT id FROM events")}
    assert {r.headers["webhook-id"] for r in subscriber.requests} == ids


def test_redeliver_through_the_api_sends_again_with_the_same_webhook_id(tmp_path: Path, receiver: Receiver) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with gateway(tmp_path, receiver.url) as client:
        callback(client)
        wait_until(lambda: states(tmp_path) == ["delivered"])
        (listed,) = client.get("/v1/deliveries?state=delivered", headers=auth).json()["deliveries"]
        assert (listed["subscription"], listed["attempts"]) == ("crm", 1)
        assert client.get("/v1/deliveries?state=pending", headers=auth).json() == {"deliveries": []}
        answer = client.post(f"/v1/deliveries/{listed['id']}/redeliver", headers=auth)
        assert (answer.status_code, answer.json()) == (202, {"redelivered": [listed["id"]]})
        wait_until(lambda: len(receiver.requests) == 2 and states(tmp_path) == ["delivered"])
        detail = client.get(f"/v1/deliveries/{listed['id']}", headers=auth).json()
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == listed["event_id"]
    assert [(a["attempt"], a["http_status"]) for a in detail["history"]] == [(1, 200), (2, 200)]


@pytest.mark.parametrize(("method", "url", "status", "code"), [
    ("GET", "/v1/deliveries/nope", 404, "not_found"),
    ("POST", "/v1/deliveries/nope/redeliver", 404, "not_found"),
    ("GET", "/v1/deliveries?state=lost", 400, "malformed"),
    ("GET", "/v1/deliveries?limit=0", 400, "malformed"),
], ids=["unknown", "redeliver-unknown", "bad-state", "bad-limit"])
def test_deliveries_api_refusals(tmp_path: Path, receiver: Receiver, method: str, url: str, status: int,
                                 code: str) -> None:
    with gateway(tmp_path, receiver.url) as client:
        answer = client.request(method, url, headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert (answer.status_code, answer.json()["error"]) == (status, code)
        assert client.get("/v1/deliveries").status_code == 401  # behind the same token as the rest of /v1


def test_the_cli_lists_shows_and_redelivers(tmp_path: Path) -> None:
    """A subscriber that refuses everything: the CLI shows the attempts, redelivers by subscription."""
    with gateway(tmp_path, f"http://127.0.0.1:{free_port()}/hooks", schedule=[0.05]) as client:
        callback(client)
        wait_until(lambda: states(tmp_path) == ["failed"])
    config = str(tmp_path / "config.yaml")
    runner = CliRunner()
    listed = runner.invoke(main, ["deliveries", "--config", config, "--json"], env=ENV, catch_exceptions=False)
    (item,) = [orjson.loads(line) for line in listed.output.splitlines()]
    assert (item["state"], item["attempts"]) == ("failed", 2)
    shown = runner.invoke(main, ["delivery", item["id"], "--config", config], env=ENV, catch_exceptions=False)
    assert shown.exit_code == 0 and "failed after 2 attempts" in shown.output and "ClientConnectorError" in shown.output
    again = runner.invoke(main, ["redeliver", "--subscription", "crm", "--since", "2000-01-01T00:00:00Z",
                                 "--config", config], env=ENV, catch_exceptions=False)
    assert again.output.strip() == "1 delivery queued to be sent again"
    assert rows(tmp_path, "SELECT state, schedule_from FROM deliveries") == [("pending", 2)]
    unknown = runner.invoke(main, ["redeliver", "nope", "--config", config], env=ENV)
    assert unknown.exit_code == 1 and "no delivery nope" in unknown.output


class StuckOutbox:
    """An Outbox (the Protocol, no mock) whose store stops answering once an attempt is to be recorded."""

    def __init__(self) -> None:
        self.handed_out = False
        self.released: list[str] = []
        self.finishing = asyncio.Event()

    async def claim(self, *, now: str, lease_until: str, limit: int, by: str) -> list[Claimed]:
        if self.handed_out:
            return []
        self.handed_out = True
        body = b'{"type":"message.status.sent","timestamp":"t","data":{"id":"e1"}}'
        return [Claimed("d1", "crm", "e1", body, b'{"status":"sent"}', 0, "2026-01-01T00:00:00.000000Z")]

    async def finish(self, attempt: Attempt, *, disable: str | None = None) -> None:
        self.finishing.set()
        await asyncio.Event().wait()  # never

    async def release(self, delivery_ids: Sequence[str]) -> None:
        self.released = list(delivery_ids)

    async def backlog(self) -> tuple[int, str | None]:
        return 0, None


def test_shutdown_releases_the_lease_of_an_attempt_that_cannot_finish(receiver: Receiver) -> None:
    forward = ForwardConfig.model_validate({"timeout": 0.2, "subscriptions": [
        {"name": "crm", "url": receiver.url, "secret": SECRET}]})
    outbox = StuckOutbox()

    async def run() -> None:
        dispatcher = Dispatcher(outbox, forward)  # type: ignore[arg-type]
        await dispatcher.start()
        await asyncio.wait_for(outbox.finishing.wait(), 30)
        await asyncio.wait_for(dispatcher.stop(), 30)

    asyncio.run(run())
    assert len(receiver.requests) == 1 and outbox.released == ["d1"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_forwarding_steps_back_while_callbacks_are_many_and_never_stops(anyio_backend: str) -> None:
    load = CallbackLoad()
    for _ in range(BUSY - 1):
        load.started()
    for _ in range(3):  # few callbacks: every attempt goes at once
        await asyncio.wait_for(load.turn(), 1)
    load.started()  # now BUSY callbacks are in flight: one attempt per BUSY_SHARE of them answered
    waiting = asyncio.create_task(load.turn())
    for _ in range(BUSY_SHARE):  # a steady load: another callback starts, one ends
        await asyncio.sleep(0)
        assert not waiting.done()
        load.started()
        load.ended()
    await asyncio.wait_for(waiting, 1)  # the BUSY_SHARE-th callback answered: its turn
    calm = asyncio.create_task(load.turn())
    await asyncio.sleep(0)
    assert not calm.done()
    load.ended()  # fewer than BUSY in flight: forwarding at full speed again
    await asyncio.wait_for(calm, 1)
    assert (load.in_flight, load.answered) == (BUSY - 1, BUSY_SHARE + 1)


def test_a_callback_counts_as_load_only_once_its_body_is_in(tmp_path: Path) -> None:
    from gateway.app import callback_routes

    document = config_document(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    load = CallbackLoad()
    route = callback_routes(load_config(tmp_path / "config.yaml", ENV), [], load=load)[TWILIO_PATH]
    headers, body = twilio_request(twilio_fields("received"))
    scope = {"type": "http", "method": "POST", "path": TWILIO_PATH, "query_string": b"", "scheme": "https",
             "server": ("gw.example.com", 443), "client": ("127.0.0.1", 1),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    seen: list[int] = []

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            seen.append(load.in_flight)  # while the body is being read: not counted yet
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen.append(load.in_flight)

        await route(scope, receive, send)

    asyncio.run(call())
    assert seen == [0, 0] and (load.in_flight, load.answered) == (0, 1)
