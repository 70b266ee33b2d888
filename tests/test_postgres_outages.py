"""PostgreSQL restarted, paused and cut off under load, behind two replicas (real processes).

Every request must get an answer, 200 or 503 + Retry-After, while the database is gone and after:
none may hang on a batch or a connection that the outage killed. Every 200 must be stored.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import http_client
from tests.conftest import GatewayProcess, start_gateway
from harness.postgres import PostgresCluster
from tests.signing import TWILIO_PATH, twilio_fields, twilio_request
from tests.tcp_proxy import TCPProxy
from tests.test_replicas import postgres_document, query

# Far above what the gateway needs to answer (its PostgreSQL deadlines are seconds), far below
# "for ever": a request that takes this long is one that hangs.
CLIENT_TIMEOUT = 45.0


class Load:
    """Signed Twilio callbacks, spread over the replicas by a few threads, until stopped."""

    def __init__(self, replicas: list[GatewayProcess]) -> None:
        self.replicas = replicas
        self.answers: dict[str, tuple[int, str | None] | str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._pool = ThreadPoolExecutor(max_workers=12)
        self._clients = [http_client.Client(timeout=CLIENT_TIMEOUT) for _ in range(12)]
        self._workers = [self._pool.submit(self._run, client) for client in self._clients]

    def _run(self, client: http_client.Client) -> None:
        while not self._stop.is_set():
            with self._lock:
                index, self._next = self._next, self._next + 1
            sid = f"SM{index:032d}"
            headers, body = twilio_request(twilio_fields("delivered", sid=sid))
            replica = self.replicas[index % len(self.replicas)]
            try:
                answer = client.post(replica.url + TWILIO_PATH, headers=headers, content=body)
                outcome: tuple[int, str | None] | str = (answer.status_code, answer.headers.get("retry-after"))
            except http_client.Timeout:
                outcome = "timeout"
            except http_client.HTTPError as exc:
                outcome = f"error: {exc!r}"
            with self._lock:
                self.answers[sid] = outcome

    def count(self, wanted: Callable[[tuple[int, str | None] | str], bool]) -> int:
        with self._lock:
            return sum(wanted(outcome) for outcome in self.answers.values())

    def wait_for(self, wanted: Callable[[tuple[int, str | None] | str], bool], at_least: int,
                 timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.count(wanted) < at_least:
            assert time.monotonic() < deadline, f"only {self.count(wanted)} answers of the kind wanted"
            time.sleep(0.05)  # polls a condition with a deadline; no ordering depends on it

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.result()
        self._pool.shutdown()
        for client in self._clients:
            client.close()


def accepted(outcome: tuple[int, str | None] | str) -> bool:
    return outcome == (200, None)


def refused(outcome: tuple[int, str | None] | str) -> bool:
    return isinstance(outcome, tuple) and outcome[0] == 503


@contextmanager
def replicas_on(tmp_path: Path, dsn: str) -> Iterator[list[GatewayProcess]]:
    started = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(start_gateway(tmp_path / name, postgres_document(tmp_path, dsn)))
        yield started
    finally:
        for gateway in started:
            gateway.stop()


def wait_ready(replicas: list[GatewayProcess], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for gateway in replicas:
        while http_client.get(gateway.url + "/readyz", timeout=CLIENT_TIMEOUT).status_code != 200:  # polls a condition
            assert time.monotonic() < deadline, "a replica did not recover"


def server_pids(cluster: PostgresCluster) -> list[int]:
    """The postmaster and every backend and helper process it started."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(entry))
    return pids


def run_outage(tmp_path: Path, cluster: PostgresCluster, dsn: str, outage: Callable[[], None]) -> None:
    with replicas_on(tmp_path, dsn) as replicas:
        load = Load(replicas)
        try:
            load.wait_for(accepted, 150)
            before = len(load.answers)
            outage()
            wait_ready(replicas)
            load.wait_for(accepted, load.count(accepted) + 150)
        finally:
            load.stop()
        answers = dict(load.answers)
        # Every request was answered, and only with 200 or 503 + Retry-After.
        odd = {sid: outcome for sid, outcome in answers.items()
               if not accepted(outcome) and not (refused(outcome) and isinstance(outcome, tuple) and outcome[1])}
        assert odd == {}, "".join(replicas[0].lines[-20:])
        assert len(answers) > before + 150
        # SIGTERM after the outage still finishes cleanly: nothing waits for ever on a dead connection.
        for gateway in replicas:
            gateway.stop()
            assert gateway.shut_down_cleanly, "".join(gateway.lines[-20:])
    stored = {row[0] for row in query(cluster.dsn(), "SELECT message_id FROM events")}
    assert {sid for sid, outcome in answers.items() if accepted(outcome)} <= stored


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    own = PostgresCluster()  # its own server: these tests stop it
    own.start()
    yield own
    try:
        own.stop()
    finally:
        own.remove()


def test_a_postgres_restart_under_load_leaves_no_request_unanswered(tmp_path: Path, cluster: PostgresCluster) -> None:
    run_outage(tmp_path, cluster, cluster.dsn(), cluster.restart)


def test_a_paused_postgres_leaves_no_request_unanswered(tmp_path: Path, cluster: PostgresCluster) -> None:
    def pause() -> None:
        pids = server_pids(cluster)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(4)  # the outage itself: how long the server is frozen
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    run_outage(tmp_path, cluster, cluster.dsn(), pause)


def test_a_network_cut_to_postgres_leaves_no_request_unanswered(tmp_path: Path, cluster: PostgresCluster) -> None:
    proxy = TCPProxy(cluster.port)
    try:
        def cut() -> None:
            proxy.cut()
            time.sleep(4)  # the outage itself: how long the link is silent
            proxy.heal()

        run_outage(tmp_path, cluster, f"postgresql://gateway@127.0.0.1:{proxy.port}/postgres", cut)
    finally:
        proxy.close()
