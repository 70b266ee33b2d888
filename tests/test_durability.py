"""Crashes and outages against a real gateway process: SIGKILL mid-load, a full disk, then recovery.

Every callback answered 200 must be in the store afterwards; nothing answered otherwise may be
taken for stored (it was not acknowledged, the provider retries it).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from tests import http_client
from tests.conftest import API_TOKEN, config_document, start_gateway
from tests.signing import TWILIO_PATH, VONAGE_SMS_PATH, twilio_fields, twilio_request
from tests.test_inbound import sms_part


LOCK = threading.Lock()
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def http() -> Iterator[http_client.Client]:
    """One connection pool for every thread: a client per request costs more than the request."""
    with http_client.Client(timeout=30) as client:
        yield client


def send(http: http_client.Client, url: str, index: int, answers: dict[str, int | None], enough: threading.Event | None = None,
         at_least: int = 0) -> None:
    sid = f"SM{index:032d}"
    headers, body = twilio_request(twilio_fields("delivered", sid=sid))
    try:
        code: int | None = http.post(url + TWILIO_PATH, headers=headers, content=body).status_code
    except http_client.HTTPError:
        code = None  # cut off: never acknowledged
    with LOCK:
        answers[sid] = code
        if enough is not None and sum(answer == 200 for answer in answers.values()) >= at_least:
            enough.set()


def stored_ids(db: Path) -> set[str]:
    return {row[0] for row in sqlite3.connect(db).execute("SELECT message_id FROM events")}


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower():
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.01)  # polls a condition (the process is gone), not a synchronization by sleep


def test_sigkill_mid_load_loses_no_acknowledged_callback(tmp_path: Path, http: http_client.Client) -> None:
    gateway = start_gateway(tmp_path, config_document(tmp_path))
    writers = children(gateway.process.pid)
    answers: dict[str, int | None] = {}
    enough = threading.Event()
    with ThreadPoolExecutor(max_workers=24) as pool:
        jobs = [pool.submit(send, http, gateway.url, index, answers, enough, 300) for index in range(4000)]
        assert enough.wait(60)
        gateway.process.kill()  # mid-load: requests are in flight, batches half-way through commit
        for job in jobs:
            job.result()
    gateway.stop()
    for writer in writers:  # it finishes what it read, then sees the pipe close and exits
        wait_gone(writer)
    acknowledged = {sid for sid, code in answers.items() if code == 200}
    assert len(acknowledged) >= 300 and None in answers.values()  # it really was killed mid-load
    restarted = start_gateway(tmp_path, config_document(tmp_path))  # the file opens cleanly after the crash
    try:
        assert http_client.get(restarted.url + "/readyz").status_code == 200
    finally:
        restarted.stop()
    assert acknowledged <= stored_ids(tmp_path / "gateway.db")


@contextmanager
def small_disk(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of its own: filled up, it is a full disk for whatever lives on it."""
    path.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run([*sudo, "umount", "-l", str(path)], check=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:  # ENOSPC: not even this much is left
                continue
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_answers_503_and_the_gateway_recovers_when_space_returns(tmp_path: Path, http: http_client.Client) -> None:
    with small_disk(tmp_path / "disk") as disk:
        document = config_document(tmp_path)
        document["sinks"] = [{"type": "sqlite", "path": str(disk / "gateway.db")}]
        gateway = start_gateway(tmp_path, document)
        try:
            answers: dict[str, int | None] = {}
            send(http, gateway.url, 0, answers)
            assert answers == {f"SM{0:032d}": 200}
            filler = fill(disk)
            assert http_client.get(gateway.url + "/readyz").status_code == 503
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda index: send(http, gateway.url, index, answers), range(1, 400)))
            assert set(answers.values()) <= {200, 503}  # never a 500, never a cut connection
            assert 503 in answers.values()
            headers, body = twilio_request(twilio_fields("sent", sid="SM" + "e" * 32))
            refused = http_client.post(gateway.url + TWILIO_PATH, headers=headers, content=body)
            assert (refused.status_code, refused.json()["error"]) == (503, "sink_unavailable")
            assert refused.headers["retry-after"] == "5"
            filler.unlink()  # space again: no restart needed
            deadline = time.monotonic() + 60
            while http_client.get(gateway.url + "/readyz").status_code != 200:  # polls a condition
                assert time.monotonic() < deadline, "the gateway did not recover"
            again: dict[str, int | None] = {}
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda index: send(http, gateway.url, index, again), range(1000, 1100)))
            assert set(again.values()) == {200}
        finally:
            gateway.stop()
        assert gateway.shut_down_cleanly
        stored = stored_ids(disk / "gateway.db")
        assert {sid for sid, code in {**answers, **again}.items() if code == 200} <= stored


def test_a_gateway_killed_between_the_parts_of_an_sms_loses_none(tmp_path: Path, http: http_client.Client) -> None:
    """SPEC §8: each part is acknowledged once stored; a crash between parts keeps the ones answered."""
    texts = {1: "Parts one, ", 2: "two and ", 3: "three."}
    gateway = start_gateway(tmp_path, config_document(tmp_path))
    writers = children(gateway.process.pid)
    try:
        for number in (2, 1):
            assert http.post(gateway.url + VONAGE_SMS_PATH, headers=JSON,
                             content=orjson.dumps(sms_part(number, texts[number]))).status_code == 200
    finally:
        gateway.stop(signal.SIGKILL)
    for writer in writers:
        wait_gone(writer)
    restarted = start_gateway(tmp_path, config_document(tmp_path))
    try:
        assert http.post(restarted.url + VONAGE_SMS_PATH, headers=JSON,
                         content=orjson.dumps(sms_part(3, texts[3]))).status_code == 200
        message = http.get(f"{restarted.url}/v1/messages/vonage/{sms_part(1, '')['messageId']}",
                           headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert message.status_code == 200
        (event,) = message.json()["events"]
        assert (event["text"], event["direction"]) == ("Parts one, two and three.", "inbound")
    finally:
        restarted.stop()
