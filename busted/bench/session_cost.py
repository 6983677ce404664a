"""What uprobe sessions save a real OpenSSL client, call by call (issue 16).

busted's probes alone (KernelSource in this process, no workers), once with the write and
read sites as uprobe sessions and once as the classic entry + return pair, against no
probes at all, alternating over rounds; the client is :mod:`busted.bench.tls_workload`'s
per-call workload on an LLM connection and on an ordinary one. This process plays the
classify worker for the ordinary one: a connection whose first request is a ``GET`` or
a ``PUT`` (the ordinary workload's) gets the verdict "uninteresting" at once.

    sudo .venv/bin/python -m busted.bench.session_cost [--rounds 3] [--calls 20000]

Prints the added CPU time per ``SSL_write_ex`` / ``SSL_read_ex`` call (median over rounds
of the paired differences) for each configuration and connection kind.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from busted import messages
from busted.bench.measure import run_client
from busted.bench.tls_workload import ORDINARY_SNI, make_certificates
from busted.config import MonitorConfig

CONFIGS = ("none", "sessions", "classic")
KINDS = ("ordinary", "llm")


class JudgingSource:
    """KernelSource with a thread draining it and judging ordinary connections."""

    def __init__(self, sessions: bool) -> None:
        from busted.sources.kernel import KernelSource

        os.environ["BUSTED_UPROBE_SESSIONS"] = "on" if sessions else "off"
        try:
            self.source = KernelSource(MonitorConfig(source="bpf"))
            self.source.start()
        finally:
            os.environ.pop("BUSTED_UPROBE_SESSIONS", None)
        self._stop = threading.Event()
        self._judged: set[tuple[int, int]] = set()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            for event in self.source.poll(0.05):
                payload = event.get("payload")
                if not isinstance(payload, (bytes, bytearray)):
                    continue
                key = (event.get("pid"), event.get("conn_id"))
                if payload.startswith((b"GET ", b"PUT ")) and key not in self._judged:
                    self._judged.add(key)
                    self.source.feedback(messages.verdict(key[0], key[1], capture=False))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.source.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m busted.bench.session_cost")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("busted.capture").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="busted-session-cost-"))
    ca, cert, key = make_certificates(workdir, also=f"DNS:{ORDINARY_SNI}")
    port_file = workdir / "port"
    server = subprocess.Popen([sys.executable, "-m", "busted.bench.tls_workload", "serve",
                               "--cert", str(cert), "--key", str(key),
                               "--port-file", str(port_file)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        client = [sys.executable, "-m", "busted.bench.tls_workload", "client", "percall",
                  "--calls", str(args.calls), "--port", port_file.read_text(),
                  "--cafile", str(ca)]
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for i in range(args.rounds):
            for config in CONFIGS if i % 2 == 0 else reversed(CONFIGS):
                source = None if config == "none" else JudgingSource(config == "sessions")
                try:
                    for kind in KINDS:
                        argv = client + (["--ordinary"] if kind == "ordinary" else [])
                        result = run_client(argv, f"client {kind}")
                        figures.setdefault((config, kind), []).append(
                            (result["write_us"], result["read_us"]))
                finally:
                    if source is not None:
                        source.close()
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        server.kill()
    print(f"{'µs added per call':26}{'SSL_write_ex':>14}{'SSL_read_ex':>13}")
    for kind in KINDS:
        base = figures[("none", kind)]
        print(f"{kind} connection, no probes: {statistics.median(b[0] for b in base):.2f} / "
              f"{statistics.median(b[1] for b in base):.2f} µs per call")
        for config in CONFIGS[1:]:
            runs = figures[(config, kind)]
            write = statistics.median(r[0] - b[0] for r, b in zip(runs, base, strict=True))
            read = statistics.median(r[1] - b[1] for r, b in zip(runs, base, strict=True))
            print(f"  {config:24}{write:>+14.2f}{read:>+13.2f}")


if __name__ == "__main__":
    main()
