"""A flood of forged callbacks against valid ones, with the quarantine on and off (SPEC §11).

    python -m bench.quarantine [--rounds 3] [--seconds 10] [--forged 100000]

Each round starts a fresh gateway (SQLite), sends `--forged` forged Twilio callbacks (each a new
body, a signature that matches nothing) with one wrk while another wrk sends valid, new, signed
ones for `--seconds`, and reports the valid ones' rate. The same flood runs against a gateway with
`quarantine.max_count: 0` (nothing kept): the ratio of the two rates is the quarantine's cost
under a flood, measured in the same run. Afterwards it counts what the store kept against the
bounds and the events against the valid 200s.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.naive import TWILIO_PATH
from bench.run import count_events_in, ensure_wrk, raw_request, start, twilio_requests, wrk
from gateway.cli import free_port


def forged_requests(port: int, count: int) -> bytes:
    out = []
    for index in range(count):
        sid = "SM" + hashlib.md5(f"forged{index}".encode()).hexdigest()
        body = f"MessageSid={sid}&SmsSid={sid}&MessageStatus=delivered&SmsStatus=delivered&To=%2B15005550006"
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJlIG9mIGFueXRoaW5nPQ=="}
        out.append(raw_request(port, TWILIO_PATH, headers, body.encode()))
    return b"\0".join(out)


def one_round(binary: str, workdir: Path, seconds: float, forged: int, keep: bool, tag: str) -> dict[str, Any]:
    port = free_port()
    valid_file, forged_file = workdir / "valid.bin", workdir / "forged.bin"
    valid_file.write_bytes(twilio_requests(port, 200_000, tag))
    forged_file.write_bytes(forged_requests(port, forged))
    # Off: the same gateway with nothing kept.
    server = start("gateway", port, workdir, extra=None if keep else {"quarantine": {"max_count": 0}})
    flood: dict[str, Any] = {}
    flooding = threading.Thread(target=lambda: flood.update(wrk(binary, port, forged_file, TWILIO_PATH, 120, False)))
    flooding.start()
    valid = wrk(binary, port, valid_file, TWILIO_PATH, seconds, False)
    flooding.join()
    server.stop()
    db = workdir / "gateway.db"
    with sqlite3.connect(db) as conn:
        kept, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM refused").fetchone()
    return {"valid_rps": valid["rps"], "valid_acked": valid["acked"], "events": count_events_in(db),
            "forged_sent": flood["requests"], "forged_rps": flood["rps"], "kept": kept, "kept_bytes": size,
            "valid_p99_ms": valid["p99_us"] / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--forged", type=int, default=100_000)
    args = parser.parse_args()
    binary = ensure_wrk()
    results: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for keep in (True, False):  # interleaved: the machine's drift falls on both
            workdir = Path(tempfile.mkdtemp(prefix="bench-quarantine-"))
            try:
                result = one_round(binary, workdir, args.seconds, args.forged, keep, f"r{round_}{keep}")
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            results[keep].append(result)
            print(("on " if keep else "off"), result, flush=True)
    on = statistics.median(r["valid_rps"] for r in results[True])
    off = statistics.median(r["valid_rps"] for r in results[False])
    print(f"valid callbacks/s under the flood: quarantine on {on:.0f}, off {off:.0f}: ratio {on / off:.3f}")
    print(f"kept at most {max(r['kept'] for r in results[True])} rows, "
          f"{max(r['kept_bytes'] for r in results[True])} bytes; "
          f"lost {sum(r['valid_acked'] - r['events'] for r in results[True] + results[False])}")


if __name__ == "__main__":
    main()
