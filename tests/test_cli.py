"""The CLI: check, urls, simulate against a real gateway, status and tail, development mode."""

from __future__ import annotations

import base64
import json
import os
import queue
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from gateway.cli import main
from tests.conftest import ENV, GatewayProcess, config_document, start_gateway
from tests.signing import TWILIO_PATH, VONAGE_PATH

NO_SECRETS = {name: "" for name in ENV}


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV if env is None else env, catch_exceptions=False)


def write_config(tmp_path: Path, document: dict[str, Any] | None = None) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document or config_document(tmp_path)))
    return str(path)


def test_check_lists_endpoints_and_sinks(tmp_path: Path) -> None:
    result = run("check", "--config", write_config(tmp_path))
    assert result.exit_code == 0
    assert "endpoint twilio-main: twilio at /webhooks/twilio/main" in result.output
    assert f"sink sqlite: {tmp_path / 'gateway.db'}" in result.output


def test_check_fails_with_one_clear_line(tmp_path: Path) -> None:
    result = run("check", "--config", write_config(tmp_path), env=NO_SECRETS)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: TWILIO_AUTH_TOKEN is not set (endpoint twilio-main, key auth_token)")


def test_urls_say_where_to_paste_and_add_the_twilio_retry_fragment(tmp_path: Path) -> None:
    output = run("urls", "--config", write_config(tmp_path)).output
    assert "https://gw.example.com/webhooks/twilio/main\n" in output
    assert "https://gw.example.com/webhooks/twilio/main#rc=5&rp=all" in output
    assert "StatusCallback" in output and "Status URL" in output
    assert "https://gw.example.com/webhooks/vonage-sms/main\n" in output and "Delivery receipts webhook URL" in output
    assert "retries only a failed connection" in output


def test_urls_come_first_and_name_the_unset_secrets_as_a_warning(tmp_path: Path) -> None:
    """A new user wants the URLs to paste before the secrets exist."""
    result = CliRunner().invoke(main, ["urls", "--config", write_config(tmp_path)], env=NO_SECRETS)
    assert result.exit_code == 0
    assert "https://gw.example.com/webhooks/twilio/main\n" in result.stdout
    assert result.stderr.startswith(
        "warning: TWILIO_AUTH_TOKEN, VONAGE_SIGNATURE_SECRET, VONAGE_SMS_SIGNATURE_SECRET not set")
    assert "unset" not in result.stdout  # the placeholder that let the config load is never shown


def test_urls_need_no_forwarding_secret_either(tmp_path: Path) -> None:
    document = config_document(tmp_path)
    document["forward"] = {"subscriptions": [{"name": "crm", "url": "https://crm.example.com/h",
                                              "secret": "${CRM_SECRET}"}]}
    result = CliRunner().invoke(main, ["urls", "--config", write_config(tmp_path, document)], env=NO_SECRETS)
    assert result.exit_code == 0, result.output
    assert "CRM_SECRET" in result.stderr and "https://gw.example.com/webhooks/vonage/main\n" in result.stdout


@pytest.mark.parametrize(("api_token", "sinks", "expected"), [
    ("t0ken-0123456789", None, "/v1 API: on (bearer token server.api_token)"),
    ("", None, "/v1 API: off (404: server.api_token is empty)"),
    ("t0ken-0123456789", [{"type": "log", "path": "events.jsonl"}],
     "/v1 API: off (404: no sqlite or postgres sink to read from)"),
], ids=["on", "no-token", "no-store"])
def test_check_says_what_v1_will_do(tmp_path: Path, api_token: str, sinks: list[dict[str, str]] | None,
                                     expected: str) -> None:
    document = config_document(tmp_path, api_token=api_token)
    if sinks is not None:
        document["sinks"] = sinks
    assert expected in run("check", "--config", write_config(tmp_path, document)).output.splitlines()


def test_check_lists_the_subscriptions_without_their_secrets(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(b"q" * 32).decode()
    document = config_document(tmp_path)
    document["forward"] = {"subscriptions": [
        {"name": "crm", "url": "https://crm.example.com/hooks", "secret": "${CRM_SECRET}"},
        {"name": "ops", "url": "https://ops.example.com/sms", "secret": ["${CRM_SECRET}", secret],
         "providers": ["vonage"], "final_only": True}]}
    result = run("check", "--config", write_config(tmp_path, document), env={**ENV, "CRM_SECRET": secret})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == [
        "subscription crm: https://crm.example.com/hooks (events *; 1 secret)",
        "subscription ops: https://ops.example.com/sms (events *; providers vonage; final only; 2 secrets)"]
    assert secret.removeprefix("whsec_") not in result.output


def simulate(gateway: GatewayProcess, provider: str, *args: str) -> Result:
    path = {"twilio": TWILIO_PATH, "vonage": VONAGE_PATH, "vonage-sms": "/webhooks/vonage-sms/main"}[provider]
    return run("simulate", provider, *args, "--config", str(gateway.tmp_path / "config.yaml"),
               "--url", gateway.url + path)


def status_json(gateway: GatewayProcess, message_id: str) -> dict[str, Any]:
    result = run("status", message_id, "--json", "--config", str(gateway.tmp_path / "config.yaml"))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


SCENARIOS = {  # scenario → provider → (current status, statuses in the timeline)
    "lifecycle": {"twilio": ("delivered", ["queued", "sending", "sent", "delivered"]),
                  "vonage": ("delivered", ["sent", "delivered"]),
                  "vonage-sms": ("delivered", ["sending", "sent", "delivered"])},
    "out-of-order": {"twilio": ("delivered", ["delivered", "sent"]), "vonage": ("delivered", ["delivered", "sent"]),
                     "vonage-sms": ("delivered", ["delivered", "sent"])},
    "duplicate": {"twilio": ("delivered", ["delivered"]), "vonage": ("delivered", ["delivered"]),
                  "vonage-sms": ("delivered", ["delivered"])},
    "failure": {"twilio": ("undelivered", ["sent", "undelivered"]), "vonage": ("rejected", ["sent", "rejected"]),
                "vonage-sms": ("undelivered", ["sent", "undelivered"])},
}
MESSAGE_IDS = {"twilio": "SM" + "c" * 32, "vonage": "cccccccc-bbbb-cccc-dddd-0123456789ab",
               "vonage-sms": "0C00000012345678"}


@pytest.mark.parametrize("provider", ["twilio", "vonage", "vonage-sms"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_simulated_scenarios_show_precedence_and_dedup(
    gateway_process: GatewayProcess, provider: str, scenario: str,
) -> None:
    message_id = MESSAGE_IDS[provider]
    result = simulate(gateway_process, provider, "--scenario", scenario, "--message-id", message_id)
    assert result.exit_code == 0, result.output
    assert result.output.count("→ 200") == len(SCENARIOS[scenario][provider][1]) + 2 * (scenario == "duplicate")
    answer = status_json(gateway_process, message_id)
    expected_status, timeline = SCENARIOS[scenario][provider]
    assert (answer["status"], [e["status"] for e in answer["events"]]) == (expected_status, timeline)
    if scenario == "failure":
        assert answer["events"][-1]["error_code"] == {"twilio": "30003", "vonage": "1250", "vonage-sms": "2"}[provider]


@pytest.mark.parametrize("provider", ["vonage", "vonage-sms"])
def test_simulate_a_vonage_conversation_stores_the_inbound_and_tracks_the_reply(
    gateway_process: GatewayProcess, provider: str,
) -> None:
    """Vonage takes no reply in the answer: the app replies through the API, and its statuses follow."""
    incoming_id = {"vonage": "dddddddd-bbbb-cccc-dddd-0123456789ab", "vonage-sms": "0D00000012345678"}[provider]
    result = simulate(gateway_process, provider, "--scenario", "conversation", "--message-id", incoming_id)
    assert result.exit_code == 0, result.output
    assert result.output.count("→ 200") == 3
    incoming = status_json(gateway_process, incoming_id)
    assert (incoming["status"], incoming["events"][0]["direction"]) == ("received", "inbound")
    assert incoming["events"][0]["text"] == "Hi, is my order on its way?"
    reply_id = result.output.split(f"{provider} reply ")[1].split()[0]
    reply = status_json(gateway_process, reply_id)
    assert [(e["status"], e["direction"]) for e in reply["events"]] == [("sent", "outbound"), ("delivered", "outbound")]


def test_simulate_one_status_and_read_it_back_as_text(gateway_process: GatewayProcess) -> None:
    config = str(gateway_process.tmp_path / "config.yaml")
    assert simulate(gateway_process, "vonage", "sent", "--message-id", "m-1").exit_code == 0
    assert simulate(gateway_process, "vonage", "read", "--message-id", "m-1").exit_code == 0
    text = run("status", "m-1", "--config", config).output
    assert text.splitlines()[0] == "vonage m-1: read (final; provider said 'read')"
    rows = text.splitlines()[4:]
    assert [row.split()[2:4] for row in rows] == [["sent", "submitted"], ["read", "read"]]
    assert rows[1].startswith("  2*")  # the current one is marked
    tail = run("tail", "-n", "1", "--config", config).output.splitlines()
    assert len(tail) == 1 and "m-1" in tail[0] and "read" in tail[0]
    lines = run("tail", "--json", "--provider", "vonage", "--status", "sent", "--config", config).output.splitlines()
    assert [json.loads(line)["provider_status"] for line in lines] == ["submitted"]


def test_status_of_an_unknown_message_fails(tmp_path: Path) -> None:
    result = run("status", "SM-nothing", "--config", write_config(tmp_path))
    assert result.exit_code == 1 and "no events for message SM-nothing" in result.output


def test_simulate_without_a_gateway_says_so(tmp_path: Path) -> None:
    result = run("simulate", "twilio", "sent", "--config", write_config(tmp_path), "--url", "http://127.0.0.1:9/x")
    assert result.exit_code == 1 and "is `status-gateway serve` running?" in result.output


def test_tail_follow_prints_new_events(gateway_process: GatewayProcess) -> None:
    config = str(gateway_process.tmp_path / "config.yaml")
    follower = subprocess.Popen([sys.executable, "-m", "gateway", "tail", "--follow", "--config", config],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        assert simulate(gateway_process, "twilio", "sent", "--message-id", "SM-follow").exit_code == 0
        line = lines.get(timeout=30)
        assert "SM-follow" in line and "sent" in line
    finally:
        follower.terminate()
        follower.wait(10)
        follower.stdout.close()  # type: ignore[union-attr]


# --- development mode ------------------------------------------------------------------------------

def test_dev_mode_generates_private_secrets_that_simulate_uses(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, config_document(tmp_path), "--dev", env=NO_SECRETS)
    try:
        secrets_file = tmp_path / ".status-gateway-dev.env"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        values = dict(line.split("=", 1) for line in secrets_file.read_text().splitlines()[1:])
        assert set(values) == set(ENV) and all(len(v) >= 32 for v in values.values())
        assert any("DEVELOPMENT MODE" in line for line in gateway.lines)
        result = CliRunner().invoke(main, ["simulate", "twilio", "delivered", "--config", str(tmp_path / "config.yaml"),
                                           "--url", gateway.url + TWILIO_PATH], env=NO_SECRETS)
        assert result.exit_code == 0 and "→ 200" in result.output
    finally:
        gateway.stop()
    assert not any(value in "".join(gateway.lines) for value in values.values())


def test_dev_mode_never_replaces_secrets_from_the_environment(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, config_document(tmp_path), "--dev")
    gateway.stop()
    assert not (tmp_path / ".status-gateway-dev.env").exists()
    assert not any("DEVELOPMENT MODE" in line for line in gateway.lines)


def test_production_start_with_a_missing_secret_fails(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", write_config(tmp_path), "--port", "0"],
        capture_output=True, text=True, env={**os.environ, **NO_SECRETS}, timeout=60,
    )
    assert process.returncode == 1
    assert "TWILIO_AUTH_TOKEN is not set (endpoint twilio-main" in process.stderr


def test_simulate_a_conversation_prints_the_reply_and_tracks_the_reply(tmp_path: Path) -> None:
    document = config_document(tmp_path)
    document["endpoints"][0]["reply"] = {"text": "Yes, it ships today."}
    gateway = start_gateway(tmp_path, document)
    try:
        result = simulate(gateway, "twilio", "--scenario", "conversation", "--message-id", "SM" + "e" * 32)
    finally:
        gateway.stop()
    assert result.exit_code == 0, result.output
    assert '<Message action="https://' in result.output and "Yes, it ships today.</Message>" in result.output
    reply_id = result.output.split("twilio reply ")[1].split()[0]
    assert status_json(gateway, "SM" + "e" * 32)["status"] == "received"
    reply = status_json(gateway, reply_id)
    assert [e["status"] for e in reply["events"]] == ["queued", "sent", "delivered"]
