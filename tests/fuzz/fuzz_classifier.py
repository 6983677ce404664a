"""Fuzz the classifier: a seeded mutation loop over the fixture corpus.

Every input goes to the classifier's internal entry point (``busted.classifier.classify_unguarded``,
which, unlike the public ``classify()``, has no catch-all that would hide a bug), and
every 16th run is also cut into random captures and fed through the stage's
``Reassembler`` (framing state, caps, flushes). Mutations: bit flips, random bytes,
inserted / deleted / duplicated ranges, splices of two fixtures, truncation, rewritten
lengths and chunk sizes, protocol tokens (HTTP/2 preface and frame headers, SSE
``data:``, JSON-RPC, ``Transfer-Encoding: chunked``), deep nesting, and pure noise.

Reports the number of inputs, exceptions (saved to ``--crash-dir`` for replay), and the
CPU time per input (mean, p99.9, max, with the slowest input saved too).

    .venv/bin/python tests/fuzz/fuzz_classifier.py --count 1000000
    .venv/bin/python tests/fuzz/fuzz_classifier.py --count 20000 --seed 7 --json
"""

# ruff: noqa: E501  (token tables read best one per line)
from __future__ import annotations

import argparse
import faulthandler
import json
import random
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from busted.classifier import classify_unguarded, context_for  # noqa: E402
from busted.classifier.reassembly import Reassembler  # noqa: E402

CORPUS = ROOT / "tests" / "fixtures" / "classifier"
MAX_INPUT = 64 * 1024
TOKENS = [
    b"\r\n", b"\r\n\r\n", b"\n\n", b": ", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 99999999999\r\n",
    b"Content-Length: -1\r\n", b"Content-Encoding: gzip\r\n", b"Content-Encoding: deflate, br\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00\x00\x06\x04\x00\x00\x00\x00\x00", b"\x00\x40\x00\x01\x05\x00\x00\x00\x01",
    b"\xff\xff\xff\x09\x04\x00\x00\x00\x01", b"data: ", b"event: message_start\n", b"data: [DONE]\n\n",
    b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":', b'"messages":[{"role":"user","content":',
    b'"model":"', b"\\u0000", b"\\ud800", b"\xed\xa0\x80", b"\x1f\x8b\x08\x00", b"ffffffff\r\n", b"0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n", b"POST /v1/messages HTTP/1.1\r\n", b"sk-ant-api03-", b"AKIA", b"eyJ", b"-----BEGIN PRIVATE KEY-----",
    b"[" * 3000, b"{" * 3000, b'"' * 500, b"9" * 400,
]  # fmt: skip


def load_seeds() -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted(CORPUS.rglob("*.bin"))]
    return [s for s in seeds if s] or [b"GET / HTTP/1.1\r\n\r\n"]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 4096))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 6)):
        n = len(data)
        op = rng.randrange(10)
        if op == 0 and n:
            i = rng.randrange(n)
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            for _ in range(rng.randrange(1, 16)):
                data[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:
            i = rng.randrange(n + 1)
            data[i:i] = rng.randbytes(rng.randrange(1, 64))
        elif op == 3 and n:
            a = rng.randrange(n)
            del data[a : a + rng.randrange(1, 256)]
        elif op == 4 and n:
            a = rng.randrange(n)
            b = min(n, a + rng.randrange(1, 512))
            data[a:a] = data[a:b] * rng.randrange(1, 4)
        elif op == 5:
            other = rng.choice(seeds)
            cut = rng.randrange(len(data) + 1)
            data = data[:cut] + other[rng.randrange(len(other) + 1) :]
        elif op == 6 and n:
            del data[rng.randrange(n) :]
        elif op == 7:
            i = rng.randrange(n + 1)
            data[i:i] = rng.choice(TOKENS)
        elif op == 8:
            # Rewrite a number (a length, a chunk size, a port) to something extreme.
            digits = [i for i in range(n) if 48 <= data[i] <= 57]
            if digits:
                i = rng.choice(digits)
                data[i : i + 1] = str(rng.choice([0, 1, 2**31, 2**63, 10**30, rng.randrange(10**6)])).encode()
        elif op == 9 and n > 1:
            a, b = sorted(rng.sample(range(n), 2))
            data[a:b] = bytes(reversed(data[a:b]))
        if len(data) > MAX_INPUT:
            del data[MAX_INPUT:]
    return bytes(data)


def run(count: int, seed: int, crash_dir: Path, progress: bool) -> dict:
    rng = random.Random(seed)
    seeds = load_seeds()
    contexts = [context_for(None, None), context_for("api.openai.com", None), context_for(None, "127.0.0.1:11434"),
                context_for("api.anthropic.com", "[::1]:443")]  # fmt: skip
    reassembler = Reassembler(max_conn_bytes=16384, max_total_bytes=131072)
    errors: dict[str, int] = {}
    saved = 0
    worst = (0.0, b"")
    total = 0.0
    times: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        data = mutate(rng, seeds)
        direction = "read" if i & 1 else "write"
        ctx = contexts[i % len(contexts)]
        t0 = time.thread_time()  # CPU time: other load on the machine does not count
        try:
            classify_unguarded(data, direction, ctx)
            if i % 16 == 0:
                cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
                pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
                for piece in pieces:
                    reassembler.feed({"pid": 1, "conn_id": i % 7, "direction": direction, "payload": piece,
                                      "truncated": rng.random() < 0.05}, float(i))  # fmt: skip
                if i % 4096 == 0:
                    reassembler.expire(float(i) + 1e6)
        except Exception as exc:  # the point of the exercise: record, keep going
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            if saved < 20:
                crash_dir.mkdir(parents=True, exist_ok=True)
                (crash_dir / f"crash-{i}-{name}.bin").write_bytes(data)
                (crash_dir / f"crash-{i}-{name}.txt").write_text(traceback.format_exc())
                saved += 1
        elapsed = time.thread_time() - t0
        total += elapsed
        times.append(elapsed)
        if elapsed > worst[0]:
            worst = (elapsed, data)
        if progress and i and i % 20000 == 0:
            print(
                f"{i:>9,} inputs, {sum(errors.values())} exceptions, max {worst[0] * 1e3:.1f} ms",
                file=sys.stderr,
            )
    wall = time.perf_counter() - started
    errors.update({k: v for k, v in reassembler.stats.items() if k.startswith("classify_error")})
    crash_dir.mkdir(parents=True, exist_ok=True)
    (crash_dir / "slowest.bin").write_bytes(worst[1])
    times.sort()
    return {
        "inputs": count,
        "seed": seed,
        "exceptions": sum(errors.values()),
        "exceptions_by_type": errors,
        "mean_us": round(total / max(count, 1) * 1e6, 1),
        "p999_ms": round(times[int(len(times) * 0.999)] * 1e3, 2) if times else 0.0,
        "max_ms": round(worst[0] * 1e3, 2),
        "slowest_input_bytes": len(worst[1]),
        "wall_s": round(wall, 1),
        "inputs_per_s": round(count / wall) if wall else 0,
    }


def main() -> int:
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid> shows where a slow input is
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crash-dir", type=Path, default=Path("/tmp/busted-fuzz"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(args.count, args.seed, args.crash_dir, progress=not args.json)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:22} {value}")
    return 1 if result["exceptions"] else 0


if __name__ == "__main__":
    sys.exit(main())
