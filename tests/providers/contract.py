"""The contract every vendor keeps, written once: each vendor's test file subclasses ProviderContract
as Test<Vendor>Contract and fills in its hooks (as django-anymail's WebhookBasicAuthTestCase).

The hooks sign with the vendor's own SDK; the tests run the adapter alone, then the whole app with
a real SQLite store: a signed callback is taken and mapped, a retry is stored once, and a forged,
tampered or unsigned one is refused and stores nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError, Rejected, Unavailable
from gateway.model import Status, StatusEvent
from providers import PROVIDERS
from providers.base import Inbound, Provider, SampleRequest
from tests.conftest import NOW, PUBLIC_URL, clock

ENDPOINT = "contract-main"
PATH = "/webhooks/contract/main"
URL = PUBLIC_URL + PATH
Request = SampleRequest  # method, url (as signed), headers, body


class ProviderContract:
    provider: ClassVar[type[Provider]]
    settings: ClassVar[dict[str, Any]]  # the endpoint's keys in config.yaml, secrets written in
    words: ClassVar[dict[str, Status]]  # some of the vendor's words and what each must become

    message_id: ClassVar[str]
    tamper: ClassVar[tuple[bytes, bytes]]  # bytes of a signed body, and what they become after signing
    signature_header: ClassVar[str]  # the header that carries the signature

    # --- hooks ------------------------------------------------------------------------------------
    def signed(self, word: str, message_id: str, secret: str | None = None) -> Request:
        """A callback for `word`, signed for URL by the vendor's SDK, with the configured secret
        unless another is given."""
        raise NotImplementedError

    def forged(self, word: str, message_id: str) -> Request:
        return self.signed(word, message_id, secret="not-the-configured-secret-0123456789abcdef")

    def tampered(self, request: Request) -> Request:
        old, new = self.tamper
        assert old in request.body
        return Request(request.method, request.url, request.headers, request.body.replace(old, new))

    def unsigned(self, request: Request) -> Request:
        headers = {k: v for k, v in request.headers.items() if k != self.signature_header}
        assert headers != request.headers
        return Request(request.method, request.url, headers, request.body)

    # --- the adapter alone --------------------------------------------------------------------------
    def adapter(self) -> Provider:
        return self.provider(ENDPOINT, self.provider.Settings.model_validate(self.settings))

    @staticmethod
    def inbound(request: Request) -> Inbound:
        return Inbound(method=request.method, url=request.url, body=request.body, received_at=NOW,
                       headers={k.lower(): v for k, v in request.headers.items()},
                       query=request.url.partition("?")[2])

    def test_is_registered_under_its_key(self) -> None:
        assert PROVIDERS[self.provider.key] is self.provider
        assert self.provider.setup(URL).strip()
        with pytest.raises(ValueError, match="Extra inputs"):
            self.provider.Settings.model_validate({**self.settings, "no_such_key": 1})

    def test_signed_callbacks_are_taken_and_mapped(self) -> None:
        adapter = self.adapter()
        for word, status in self.words.items():
            request = self.inbound(self.signed(word, self.message_id))
            event = adapter.parse(adapter.verify(request), request)
            assert event is not None
            assert (event.provider, event.endpoint, event.message_id, event.status, event.provider_status) == (
                self.provider.name, ENDPOINT, self.message_id, status, word)

    def test_an_unknown_word_is_kept_as_unknown(self) -> None:
        adapter = self.adapter()
        request = self.inbound(self.signed("brand_new_word", self.message_id))
        event = adapter.parse(adapter.verify(request), request)
        assert event is not None and (event.status, event.provider_status) == (Status.UNKNOWN, "brand_new_word")

    @pytest.mark.parametrize("how", ["forged", "tampered", "unsigned"])
    def test_what_the_vendor_did_not_sign_is_refused(self, how: str) -> None:
        word = next(iter(self.words))
        request = self.forged(word, self.message_id) if how == "forged" else getattr(self, how)(
            self.signed(word, self.message_id))
        with pytest.raises(GatewayError) as refused:
            self.adapter().verify(self.inbound(request))
        assert isinstance(refused.value, Rejected | Unavailable) and not isinstance(refused.value, ConfigError)

    def test_a_retry_maps_to_the_same_event_id(self) -> None:
        adapter = self.adapter()
        word = next(iter(self.words))
        first, retry = (self.inbound(self.signed(word, self.message_id)) for _ in range(2))
        one, two = adapter.parse(adapter.verify(first), first), adapter.parse(adapter.verify(retry), retry)
        assert one is not None and two is not None and one.id == two.id

    def test_every_simulated_callback_verifies(self) -> None:
        adapter = self.adapter()
        steps = {(step[0], step[2] if len(step) == 3 else None)
                 for scenario in self.provider.scenarios.values() for step in scenario}
        assert steps, "simulate needs scenarios"
        categories = set()
        for word, code in sorted(steps, key=str):
            sample = adapter.sample(url=URL, word=word, message_id=adapter.new_message_id(), account_seed="0" * 64,
                                    now=NOW, error_code=code)
            request = self.inbound(sample)
            event = adapter.parse(adapter.verify(request), request)
            assert isinstance(event, StatusEvent) and event.provider_status == word
            if code is not None:  # a scenario's own code is one its table knows
                assert event.error_code == code and event.reason is not None and event.reason.mapped
                categories.add(event.reason.category)
        assert len(categories) >= 3, "simulate shows failures of several reason categories"

    # --- through the whole app ------------------------------------------------------------------
    def client(self, tmp_path: Path) -> TestClient:
        document = {"server": {"public_url": PUBLIC_URL},
                    "endpoints": [{"name": ENDPOINT, "provider": self.provider.key, "path": PATH, **self.settings}],
                    "sinks": [{"type": "sqlite", "path": str(tmp_path / "contract.db")}]}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
        return TestClient(create_app(load_config(tmp_path / "config.yaml", {}), clock=clock), base_url=PUBLIC_URL)

    @staticmethod
    def send(client: TestClient, request: Request) -> int:
        path = request.url.removeprefix(PUBLIC_URL)
        return client.request(request.method, path, headers=request.headers, content=request.body).status_code

    @staticmethod
    def stored(tmp_path: Path) -> list[tuple[str, str]]:
        return sqlite3.connect(tmp_path / "contract.db").execute(
            "SELECT message_id, json_extract(body, '$.provider_status') FROM events ORDER BY seq").fetchall()

    def test_the_app_stores_a_signed_callback_once_and_nothing_it_refuses(self, tmp_path: Path) -> None:
        word = next(iter(self.words))
        signed = self.signed(word, self.message_id)
        with self.client(tmp_path) as client:
            for refused in (self.forged(word, self.message_id), self.tampered(signed), self.unsigned(signed)):
                assert self.send(client, refused) in (401, 403, 503)
            assert self.stored(tmp_path) == []
            assert self.send(client, signed) == 200
            assert self.send(client, self.signed(word, self.message_id)) == 200  # the vendor's retry
        assert self.stored(tmp_path) == [(self.message_id, word)]
