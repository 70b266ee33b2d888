"""Refused callbacks against a real gateway process (SPEC §11): quarantined, explained, the config
fixed, replayed: stored once each, with the times they first arrived, and forwarded."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.cli_refused import _replay
from gateway.errors import InvalidToken
from gateway.model import Refused, utc_iso
from gateway.quarantine import explain, inbound_of
from gateway.sinks.sqlite import SQLiteSink
from tests import http_client
from tests.conftest import (
    API_TOKEN,
    ENV,
    NOW,
    PUBLIC_URL,
    TWILIO_TOKEN,
    GatewayProcess,
    config_document,
    start_gateway,
    wait_until,
)
from tests.forward.receiver import Receiver, serve
from tests.forward.test_processes import with_forward
from tests.signing import (
    TWILIO_PATH,
    VONAGE_PATH,
    VONAGE_SMS_PATH,
    twilio_fields,
    twilio_request,
    vonage_claims,
    vonage_payload,
    vonage_request,
    vonage_sms_receipt,
)

NEW_HOST = "https://hooks.example.org"  # the proxy the callbacks now come through


def cli(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(tmp_path / "config.yaml")], env=ENV,
                              catch_exceptions=False)


def refused_list(gateway: GatewayProcess) -> dict[str, Any]:
    answer = http_client.get(gateway.url + "/v1/refused", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def kept(gateway: GatewayProcess, count: int) -> list[dict[str, Any]]:
    """Once the quarantine's writer has kept `count` (it writes beside the callbacks, not in them)."""
    wait_until(lambda: len(refused_list(gateway)["refused"]) >= count)
    found = refused_list(gateway)["refused"]
    assert len(found) == count
    return list(found)


def events(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT message_id, status, received_at FROM events ORDER BY message_id").fetchall()


def post_all(url: str, requests: list[tuple[dict[str, str], bytes]]) -> list[int]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda r: http_client.post(url, headers=r[0], content=r[1]).status_code, requests))


def refuse(tmp_path: Path, document: dict[str, Any], path: str, requests: list[tuple[dict[str, str], bytes]],
           status: int) -> tuple[list[dict[str, Any]], str]:
    """Send them to a gateway of this config, each refused with `status`; (what the quarantine
    kept, once the gateway stopped, and what `explain` says of the first)."""
    gateway = start_gateway(tmp_path, document)
    try:
        assert post_all(gateway.url + path, requests) == [status] * len(requests)
        found = kept(gateway, len(requests))
    finally:
        gateway.stop()
    return found, cli(tmp_path, "explain", found[0]["id"]).output


def rewrite(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))


def test_a_wrong_public_url_is_kept_explained_and_replayed_once_with_its_times(tmp_path: Path) -> None:
    subscriber = Receiver()
    up = serve(subscriber)
    document = with_forward(config_document(tmp_path), subscriber.url)
    gateway = start_gateway(tmp_path, document)
    sids = [f"SM{index:032d}" for index in range(5)]
    try:
        requests = [twilio_request(twilio_fields("delivered", sid=sid), url=NEW_HOST + TWILIO_PATH) for sid in sids]
        for headers, _ in requests:  # as the new proxy passes them on
            headers.update({"X-Forwarded-Host": "hooks.example.org", "X-Forwarded-Proto": "https"})
        assert post_all(gateway.url + TWILIO_PATH, requests) == [403] * 5
        found = kept(gateway, 5)
        assert {item["code"] for item in found} == {"invalid_signature"}
        assert {item["url"] for item in found} == {PUBLIC_URL + TWILIO_PATH}
        assert events(gateway.db) == []
        # Accepted callbacks go on meanwhile, untouched by what is kept.
        headers, body = twilio_request(twilio_fields("sent", sid=sids[0]))
        assert http_client.post(gateway.url + TWILIO_PATH, headers=headers, content=body).status_code == 200
    finally:
        gateway.stop()
    listed = cli(tmp_path, "refused")
    assert listed.exit_code == 0 and listed.output.count("invalid_signature") == 5
    explained = cli(tmp_path, "explain", found[0]["id"])
    assert explained.exit_code == 0
    assert f"set server.public_url to {NEW_HOST}" in explained.output
    assert TWILIO_TOKEN not in explained.output + listed.output
    # Nothing to change yet: a replay keeps them all.
    assert cli(tmp_path, "replay", "--endpoint", "twilio-main").exit_code == 1
    assert len(events(gateway.db)) == 1

    document["server"]["public_url"] = NEW_HOST
    rewrite(tmp_path, document)
    gateway = start_gateway(tmp_path, document)
    try:
        # One of them came again, signed right, before the replay: the replay adds nothing for it.
        assert post_all(gateway.url + TWILIO_PATH, requests[1:2]) == [200]
        replayed = cli(tmp_path, "replay", "--endpoint", "twilio-main")
        assert replayed.exit_code == 0, replayed.output
        assert "5 replayed, 0 still refused" in replayed.output
        assert replayed.output.count("duplicate:") == 1
        stored = events(gateway.db)
        delivered = {(sid, at) for sid, status, at in stored if status == "delivered"}
        refused_at = {(item["url"], item["received_at"]) for item in found}
        assert len(stored) == 6 and len(delivered) == 5
        # Each with the time it first arrived (the one sent again: its second arrival, stored first).
        assert {at for _, at in delivered} - {at for _, at in refused_at} == {
            at for sid, at in delivered if sid == sids[1]}
        assert refused_list(gateway)["refused"] == []
        again = cli(tmp_path, "replay", "--endpoint", "twilio-main")
        assert "0 replayed, 0 still refused" in again.output and len(events(gateway.db)) == 6
        # Forwarded like any event: one delivery per event reaches the subscriber.
        wait_until(lambda: len({r.headers["webhook-id"] for r in subscriber.requests}) == 6)
    finally:
        gateway.stop()
        up.stop()


def test_a_token_missing_from_the_config_is_named_and_replayed_once_added(tmp_path: Path) -> None:
    document = config_document(tmp_path)
    new_token = "twilio_rotated_auth_token_fedcba9876543210"
    requests = [twilio_request(twilio_fields("delivered", sid=f"SM{i:032d}"), token=new_token) for i in range(3)]
    found, explained = refuse(tmp_path, document, TWILIO_PATH, requests, 403)
    assert "add its current token to auth_token of endpoint twilio-main" in explained
    assert new_token not in explained
    document["endpoints"][0]["auth_token"] = ["${TWILIO_AUTH_TOKEN}", new_token]
    rewrite(tmp_path, document)
    assert "verifies with the current config" in cli(tmp_path, "explain", found[0]["id"]).output
    replayed = cli(tmp_path, "replay", *[item["id"] for item in found])
    assert replayed.exit_code == 0 and "3 replayed, 0 still refused" in replayed.output
    assert sorted(at for _, _, at in events(tmp_path / "gateway.db")) == sorted(item["received_at"] for item in found)


def test_a_vonage_secret_missing_from_the_config_is_named_and_replayed_once_added(tmp_path: Path) -> None:
    document = config_document(tmp_path)
    document["endpoints"][1]["max_token_age"] = 30
    other_secret = "vonage_other_account_signature_secret_01234"
    requests = []
    for index in range(3):
        body = orjson.dumps(vonage_payload("delivered", uuid_=f"aaaaaaaa-bbbb-cccc-dddd-{index:012d}"))
        iat = int(datetime.now(timezone.utc).timestamp()) - 20  # 20 s old: within max_token_age at arrival
        token = jwt.encode(vonage_claims(body, iat=iat), other_secret, algorithm="HS256")
        requests.append(({"Content-Type": "application/json", "Authorization": f"Bearer {token}"}, body))
    found, explained = refuse(tmp_path, document, VONAGE_PATH, requests, 401)
    assert {item["code"] for item in found} == {"invalid_token"}
    assert "signed with a secret that is not in the config" in explained
    assert "signature_secret of endpoint vonage-main" in explained and other_secret not in explained
    assert "max_token_age" not in explained  # its age is judged at its arrival, not now
    document["endpoints"][1]["signature_secret"] = ["${VONAGE_SIGNATURE_SECRET}", other_secret]
    rewrite(tmp_path, document)
    replayed = cli(tmp_path, "replay", "--endpoint", "vonage-main")
    assert replayed.exit_code == 0 and "3 replayed, 0 still refused" in replayed.output, replayed.output
    assert sorted(at for _, _, at in events(tmp_path / "gateway.db")) == sorted(item["received_at"] for item in found)


def test_a_wrong_sms_api_method_is_named_and_replayed_once_set(tmp_path: Path) -> None:
    from tests.conftest import VONAGE_SMS_SECRET

    document = config_document(tmp_path)
    requests = []
    for index in range(2):
        fields = vonage_sms_receipt("delivered", messageId=f"0A00000{index:09d}")
        text = "".join(f"&{key}={fields[key]}" for key in sorted(fields))
        fields["sig"] = hmac.new(VONAGE_SMS_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
        requests.append(({"Content-Type": "application/json"}, orjson.dumps(fields)))
    found, explained = refuse(tmp_path, document, VONAGE_SMS_PATH, requests, 403)
    assert "set signature_method: sha256 on endpoint vonage-sms-main" in explained
    document["endpoints"][2]["signature_method"] = "sha256"
    rewrite(tmp_path, document)
    replayed = cli(tmp_path, "replay", found[0]["id"], found[1]["id"])
    assert replayed.exit_code == 0 and "2 replayed, 0 still refused" in replayed.output
    assert len(events(tmp_path / "gateway.db")) == 2


def test_a_flood_of_forgeries_stays_within_the_bounds(tmp_path: Path) -> None:
    document = config_document(tmp_path)
    document["quarantine"] = {"max_count": 50, "max_bytes": 20_000}
    gateway = start_gateway(tmp_path, document)
    try:
        forged = [({"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "Zm9yZ2Vk"},
                   f"MessageSid=SM{index:032d}&MessageStatus=delivered&Pad={'x' * 300}".encode())
                  for index in range(3000)]
        assert set(post_all(gateway.url + TWILIO_PATH, forged)) == {403}
        headers, body = twilio_request(twilio_fields("delivered"))
        assert http_client.post(gateway.url + TWILIO_PATH, headers=headers, content=body).status_code == 200
        wait_until(lambda: any(c["count"] for c in refused_list(gateway)["counts"]))
        metrics = http_client.get(gateway.url + "/metrics").text
        assert 'gateway_refused_callbacks_total{code="invalid_signature",endpoint="twilio-main"} 3000.0' in metrics
    finally:
        gateway.stop()
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        count, size, largest, newest = conn.execute("SELECT count(*), sum(size), max(size), max(body) FROM refused"
                                                    ).fetchone()
    assert 0 < count <= 50 and size <= 20_000
    assert size + largest > 20_000  # the bytes bound, not anything else, stopped it: one more would not fit
    assert newest == forged[-1][1]  # the newest are the ones kept


def refused_from(endpoint: str, provider: str, headers: dict[str, str], body: bytes, url: str,
                 at: datetime = NOW) -> Refused:
    kept_headers = {k.lower(): v for k, v in headers.items()}
    return Refused(id=Refused.key(endpoint, "POST", url, kept_headers, body), endpoint=endpoint, provider=provider,
                   code="invalid_token", detail="refused", method="POST", url=url, query="", headers=kept_headers,
                   body=body, received_at=utc_iso(at))


def test_a_replayed_vonage_token_is_judged_at_its_arrival_not_at_the_replay(make_config: Any, tmp_path: Path) -> None:
    config = make_config()
    headers, body = vonage_request(vonage_payload("delivered"), iat=int(NOW.timestamp()) - 10)
    refused = refused_from("vonage-main", "vonage", headers, body, PUBLIC_URL + VONAGE_PATH)
    # Judged now (the wall clock is years before NOW), the token's iat would lie in the future.
    adapter = config.endpoint("vonage-main").adapter()
    with pytest.raises(InvalidToken, match="future"):
        adapter.verify(replace(inbound_of(refused, refused.url), received_at=datetime.now(timezone.utc)))

    async def run() -> list[Any]:
        store = SQLiteSink(str(tmp_path / "gateway.db"), writer=False)
        await store.open()
        await store.quarantine([refused], max_count=10, max_bytes=1 << 20)
        await store.close()
        return await _replay(config, [refused.id], None, None, None)

    (result,) = asyncio.run(run())
    assert (result.kept, result.outcome) == (False, "accepted")
    assert [at for _, _, at in events(tmp_path / "gateway.db")] == [utc_iso(NOW)]


def twilio_refused(url_signed: str, **headers: str) -> Refused:
    signed_headers, body = twilio_request(twilio_fields("delivered"), url=url_signed)
    return refused_from("twilio-main", "twilio", {**signed_headers, **headers}, body, PUBLIC_URL + TWILIO_PATH)


@pytest.mark.parametrize(("signed_for", "headers", "finding"), [
    ("https://gw.example.com:8443" + TWILIO_PATH, {"Host": "gw.example.com:8443"},
     "set server.public_url to https://gw.example.com:8443"),
    ("http://gw.example.com" + TWILIO_PATH, {}, "set server.public_url to http://gw.example.com"),
    (PUBLIC_URL + TWILIO_PATH + "/", {}, "set path: /webhooks/twilio/main/ on endpoint twilio-main"),
    ("https://hooks.example.org" + TWILIO_PATH, {"Host": "hooks.example.org"},
     "set server.public_url to https://hooks.example.org"),
], ids=["port", "scheme", "trailing-slash", "host"])
def test_explain_names_the_url_twilio_signed(make_config: Any, signed_for: str, headers: dict[str, str],
                                             finding: str) -> None:
    findings = explain(twilio_refused(signed_for, **headers), make_config())
    assert any(finding in line for line in findings), findings


def test_explain_names_the_other_endpoint_whose_token_signed_it(make_config: Any, tmp_path: Path) -> None:
    document = config_document(tmp_path)
    document["endpoints"].append({"name": "twilio-eu", "provider": "twilio", "auth_token": "eu-account-token-0123"})
    config = make_config(document)
    signed_headers, body = twilio_request(twilio_fields("delivered"), token="eu-account-token-0123")
    refused = refused_from("twilio-main", "twilio", signed_headers, body, PUBLIC_URL + TWILIO_PATH)
    (finding,) = explain(refused, config)
    assert "the auth_token of endpoint twilio-eu" in finding and "eu-account-token-0123" not in finding


@pytest.mark.parametrize(("claims", "body_change", "finding"), [
    ({"iat": int(NOW.timestamp()) - 900}, False, "900 s old when it arrived, more than max_token_age (300 s)"),
    ({"iat": int(NOW.timestamp()) + 600}, False, "issued 600 s after it arrived"),
    ({"exp": int(NOW.timestamp()) - 42}, False, "expired 42 s before it arrived"),
    ({}, True, "The body is not the one Vonage signed"),
], ids=["too-old", "future", "expired", "body-altered"])
def test_explain_says_what_is_wrong_with_a_vonage_token(make_config: Any, claims: dict[str, Any], body_change: bool,
                                                        finding: str) -> None:
    headers, body = vonage_request(vonage_payload("delivered"), **claims)
    if body_change:
        body = body.replace(b"delivered", b"rejected")
    findings = explain(refused_from("vonage-main", "vonage", headers, body, PUBLIC_URL + VONAGE_PATH), make_config())
    assert len(findings) == 1 and finding in findings[0], findings


def test_explain_says_an_unsigned_or_unmarked_callback_cannot_verify(make_config: Any) -> None:
    config = make_config()
    unsigned = refused_from("vonage-main", "vonage", {"Content-Type": "application/json"}, b"{}",
                            PUBLIC_URL + VONAGE_PATH)
    assert "it was sent unsigned" in explain(unsigned, config)[0]
    bare = refused_from("twilio-main", "twilio", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=b",
                        PUBLIC_URL + TWILIO_PATH)
    assert "no X-Twilio-Signature header" in explain(bare, config)[0]
