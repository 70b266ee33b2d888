"""`status-gateway export`: every stored event, oldest first, as JSON lines or CSV, within a time range."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from gateway import cli_export
from gateway.cli import main
from gateway.model import Reason, Status, StatusEvent
from gateway.sinks.sqlite import SQLiteSink
from tests.conftest import ENV, config_document


def stored(tmp_path: Path, count: int) -> list[StatusEvent]:
    events = [StatusEvent(provider="twilio", endpoint="twilio-main", message_id=f"SM{i:032d}",
                          status=Status.UNDELIVERED if i % 3 == 0 else Status.DELIVERED,
                          provider_status="undelivered" if i % 3 == 0 else "delivered",
                          error_code="30003" if i % 3 == 0 else None, to="+15005550006",
                          reason=Reason("unreachable", False, "Unreachable destination handset") if i % 3 == 0 else None,
                          text="a, \"quoted\" text" if i == 1 else None,
                          received_at=f"2031-05-17T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000000Z")
              for i in range(count)]

    async def write() -> None:
        store = SQLiteSink(str(tmp_path / "gateway.db"))
        await store.open()
        assert all(await asyncio.gather(*[store.write(event) for event in events]))
        await store.close()

    asyncio.run(write())
    return events


def export(tmp_path: Path, *args: str) -> str:
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_document(tmp_path)))
    result = CliRunner().invoke(main, ["export", "--config", str(tmp_path / "config.yaml"), *args], env=ENV,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_export_writes_every_event_oldest_first_across_pages(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(cli_export, "PAGE", 7)  # several pages of the store's walk
    events = stored(tmp_path, 50)
    lines = export(tmp_path).splitlines()
    assert [orjson.loads(line) for line in lines] == [event.to_json() for event in events]


def test_export_as_csv_within_a_time_range(tmp_path: Path) -> None:
    events = stored(tmp_path, 200)
    text = export(tmp_path, "--format", "csv", "--since", "2031-05-17T00:01:00Z", "--until", "2031-05-17T00:02:00Z")
    rows = list(csv.DictReader(io.StringIO(text)))
    wanted = [e for e in events if "2031-05-17T00:01:00" <= e.received_at < "2031-05-17T00:02:00"]
    assert len(rows) == 60 and [row["id"] for row in rows] == [e.id for e in wanted]
    assert {row["reason"] for row in rows if row["status"] == "undelivered"} == {"unreachable"}
    assert rows[0]["final"] == "true" and rows[0]["message_id"] == wanted[0].message_id
    full = list(csv.DictReader(io.StringIO(export(tmp_path, "--format", "csv", "--until", "2031-05-17T00:00:02Z"))))
    assert full[1]["text"] == 'a, "quoted" text'  # CSV's own quoting round-trips
