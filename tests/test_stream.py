"""GET /v1/stream against real gateway processes: events as Server-Sent Events, from the shared store
(every replica streams every replica's events), resumable with Last-Event-ID; tail --follow --url."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


from tests import http_client
from tests.conftest import ENV, config_document, start_gateway, wait_until
from tests.signing import TWILIO_PATH, twilio_fields, twilio_request
from tests.test_replicas import postgres_document

TOKEN = "replica-api-token-0123456789"  # postgres_document's server.api_token


class Listener:
    """Reads a stream in a thread until it has been quiet for two seconds (its read timeout)."""

    def __init__(self, url: str, token: str, last_event_id: str | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        headers = {"Authorization": f"Bearer {token}", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self.thread.start()
        assert self.connected.wait(30)

    def _read(self, url: str, headers: dict[str, str]) -> None:
        last = ""
        try:
            with http_client.Client() as client, client.lines(url + "/v1/stream", headers=headers,
                                                              read_timeout=2) as (answer, lines):
                assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
                for line in lines:
                    self.connected.set()  # the stream's opening comment has arrived
                    if line.startswith("id: "):
                        last = line[4:]
                    elif line.startswith("data: "):
                        self.events.append((last, json.loads(line[6:])))
        except http_client.Timeout:
            pass
        finally:
            self.connected.set()


def send(url: str, sid: str, status: str = "delivered") -> None:
    headers, body = twilio_request(twilio_fields(status, sid=sid))
    assert http_client.post(url + TWILIO_PATH, headers=headers, content=body, timeout=30).status_code == 200


def test_a_replica_streams_the_events_another_stored_and_a_reconnect_resumes(tmp_path: Path,
                                                                            postgres_dsn: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    document = postgres_document(tmp_path, postgres_dsn)
    a, b = start_gateway(tmp_path / "a", document), start_gateway(tmp_path / "b", document)
    try:
        send(a.url, "SM" + "0" * 32, "sent")  # stored before the stream opens: not in it
        listener = Listener(b.url, TOKEN)
        for index in range(1, 4):
            send(a.url, f"SM{index:032d}")
        wait_until(lambda: len(listener.events) == 3)
        assert [event["message_id"] for _, event in listener.events] == [f"SM{i:032d}" for i in range(1, 4)]
        ids = [int(seq) for seq, _ in listener.events]
        assert ids == sorted(ids)
        # Reconnecting after the first: the two it missed, in order, and nothing else.
        resumed = Listener(b.url, TOKEN, last_event_id=str(ids[0]))
        wait_until(lambda: len(resumed.events) == 2)
        assert [event["message_id"] for _, event in resumed.events] == [f"SM{i:032d}" for i in range(2, 4)]
        refused = http_client.get(b.url + "/v1/stream", headers={"Authorization": "Bearer wrong"}, timeout=30)
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")
        bad = http_client.get(b.url + "/v1/stream", headers={"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": "x"},
                        timeout=30)
        assert (bad.status_code, bad.json()["error"]) == (400, "malformed")
    finally:
        a.stop()
        b.stop()


def test_tail_follow_url_prints_what_the_gateway_streams(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, config_document(tmp_path))
    tail = subprocess.Popen(
        [sys.executable, "-m", "gateway", "tail", "--follow", "--json", "--url", gateway.url,
         "--config", str(tmp_path / "config.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV},
        cwd=tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(tail.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        sent: list[str] = []

        def one_more_arrived() -> bool:
            """The tail connects in its own time: keep sending until what it prints includes one sent."""
            printed = {json.loads(line)["message_id"] for line in lines if line.strip()}
            if printed & set(sent):
                return True
            sent.append(f"SM{len(sent):032d}")
            send(gateway.url, sent[-1])
            return False

        wait_until(one_more_arrived)
    finally:
        tail.terminate()
        tail.wait(30)
        reader.join(30)
        assert tail.stdout is not None and tail.stderr is not None
        tail.stdout.close()
        tail.stderr.close()
        gateway.stop()
    assert all(json.loads(line)["provider"] == "twilio" for line in lines if line.strip())


def test_an_open_stream_ends_when_the_gateway_is_told_to_stop(tmp_path: Path) -> None:
    """uvicorn waits for open responses before it shuts the app down: a dashboard left open would
    hold every SIGTERM to the whole graceful timeout, then be cancelled. The stream ends first."""
    from tests.conftest import API_TOKEN

    gateway = start_gateway(tmp_path, config_document(tmp_path))
    ended = threading.Event()

    def read() -> None:
        with http_client.Client() as client, client.lines(gateway.url + "/v1/stream", read_timeout=60,
                                                          headers={"Authorization": f"Bearer {API_TOKEN}"}) as (_, lines):
            for _ in lines:
                connected.set()
        ended.set()  # the server ended the stream: no timeout, no reset

    connected = threading.Event()
    threading.Thread(target=read, daemon=True).start()
    assert connected.wait(30)
    gateway.stop(timeout=20)  # well inside uvicorn's 30 s graceful timeout
    assert ended.wait(5) and gateway.shut_down_cleanly
    assert not any("graceful shutdown exceeded" in line for line in gateway.lines)
