"""What the per-exchange statistics cost in the kernel (issue 15): BPF ns per run of the
socket send/recv tracepoint programs (bpf/connections.bpf.c), measured with the kernel's
per-program counters while a loopback TCP client does ROUNDS request/response round
trips (each a send and a recv on a tracked socket, and a REC_EXCHANGE per round trip).

    sudo .venv/bin/python -m busted.bench.exchange_cost
    # the tree before the change, for comparison:
    git archive e21e131~1 | tar -x -C /tmp/before
    sudo PYTHONPATH=/tmp/before .venv/bin/python busted/bench/exchange_cost.py

Runs are host-wide (anyone's socket calls run the same programs); ns per run is what
matters. Needs root.
"""

from __future__ import annotations

import json
import socket
import threading

from busted.bench.kernel_cost import probes_alone

ROUNDS = 20000


def serve(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        while True:
            data = conn.recv(512)
            if not data:
                return
            conn.sendall(b"r" * 200)


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    with probes_alone(max_copy=16384) as kernel:
        client = socket.create_connection(listener.getsockname())  # tracked: connect seen
        for _ in range(200):  # warm
            client.sendall(b"q" * 300)
            client.recv(512)
        kernel.mark("before")
        for _ in range(ROUNDS):
            client.sendall(b"q" * 300)
            client.recv(512)
        kernel.mark("after")
        client.close()
        cost = kernel.cost(ROUNDS)
    progs = {k: v for k, v in cost["programs"].items() if "sock" in k}
    print(json.dumps({"rounds": ROUNDS, "programs": progs}, indent=1))


if __name__ == "__main__":
    main()
