"""Profile the gateway under the benchmark's load: py-spy samples the serving process while wrk runs.

    python -m bench.profile [twilio|vonage] [--seconds 8]   → a py-spy "raw" flame file + a top-N summary
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.naive import TWILIO_PATH, VONAGE_PATH
from bench.run import ensure_wrk, start, twilio_requests, vonage_requests, wrk
from gateway.cli import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("provider", choices=["twilio", "vonage"])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    binary = ensure_wrk()
    port = free_port()
    scratch = Path(tempfile.mkdtemp(prefix="status-gateway-profile-"))
    make = twilio_requests if args.provider == "twilio" else vonage_requests
    requests = scratch / "load.req"
    requests.write_bytes(make(port, 40000 * args.seconds // 4, "profile"))
    server = start("gateway", port, scratch)
    flame = scratch / "profile.txt"
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw", "--nonblocking", "--rate", "250",
                            "-d", str(args.seconds + 1), "-o", str(flame), "-p", str(server.process.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = wrk(binary, port, requests, TWILIO_PATH if args.provider == "twilio" else VONAGE_PATH,
                  args.seconds, False)
    finally:
        spy.wait()
        server.stop()
    print(f"{run['rps']:.0f} req/s, p99 {run['p99_us'] / 1000:.2f} ms; flame data in {flame}")
    summarize(flame, args.top)


def summarize(flame: Path, top: int) -> None:
    """Inclusive share of samples per function (file:function), the way a flame graph's widths read."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in flame.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0] + " " + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                inclusive[name] += samples
    for name, samples in inclusive.most_common(top):
        print(f"{100 * samples / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
