"""`busted bench rustls`: what the rustls (aws-lc) probes cost per TLS record.

Codex is a stripped static Rust binary; busted probes aws-lc's ``EVP_AEAD_CTX_seal``
(entry) and ``EVP_AEAD_CTX_open`` (entry and return), found by
:mod:`busted.kernel.tls.rustls`: one probe hit per record sent, two per record received.
A Codex run is far too noisy (startup, tokio wake-ups) to time a microsecond per record
in it, so the benchmark has two parts:

1. Per call, precisely: a small C program (compiled here with gcc) calls two functions
   with aws-lc's signature and first instruction (``push %rbp``: an emulated probe site,
   as in Codex) in a tight loop with 100-byte TLS 1.3 application-data records. Its CPU
   time per call is measured with no probe, with the *floor* (empty programs at the
   same sites: uprobe at seal, uprobe + uretprobe at open) and with busted's real
   programs (``bpf/rustls.bpf.c`` compiled with ``busted.h`` as the monitor does; every
   record copied to the ring buffer, which a thread drains). Off, floor and on
   alternate round after round (order reversed every other round); medians.
2. On the real Codex: ``codex exec`` turns against a loopback Responses API whose answer
   is ``--records`` SSE events (one TLS record each), with the real probes attached
   (:class:`busted.bench.kernel_cost.KernelOnly`) and the kernel's per-program run
   counters on: probe runs per turn and BPF ns per run, measured on Codex itself.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from busted.bench.kernel_cost import (
    EMPTY_PROBE,
    bpf_cost,
    enable_bpf_stats,
    probes_alone,
    restore_bpf_stats,
)
from busted.bench.measure import BenchRun, alternating
from busted.bench.tls_workload import make_certificates
from busted.errors import BenchError
from busted.kernel import bpf_syscall
from busted.kernel.tls import rustls
from busted.kernel.tls.elf import ElfFile
from busted.kernel.tls.site import NotLocated

AGENT_CODEX = "/var/cache/busted/agents/codex-*/package/vendor/*/bin/codex"
RUN_TIMEOUT_S = 300
_CONFIG = """model_provider = "bench"
model = "gpt-bench"

[model_providers.bench]
name = "bench"
base_url = "https://localhost:{port}/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0
"""

STUB_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* aws-lc's EVP_AEAD_CTX_seal / _open: (ctx, out, *out_len, max_out, nonce, nonce_len,
 * in, in_len, ad, ad_len), the last four on the stack, as Codex calls them */
__attribute__((noipa)) int stub_seal(void *ctx, uint8_t *out, size_t *out_len,
        size_t max_out, const uint8_t *nonce, size_t nonce_len, const uint8_t *in,
        size_t in_len, const uint8_t *ad, size_t ad_len)
{
    __asm__ volatile("" ::: "memory");
    *out_len = in_len + 16;
    return 1;
}

__attribute__((noipa)) int stub_open(void *ctx, uint8_t *out, size_t *out_len,
        size_t max_out, const uint8_t *nonce, size_t nonce_len, const uint8_t *in,
        size_t in_len, const uint8_t *ad, size_t ad_len)
{
    __asm__ volatile("" ::: "memory");
    *out_len = in_len - 16;
    return 1;
}

static double cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    static uint8_t record[256], out[256], nonce[12], ctx_seal[64], ctx_open[64];
    size_t out_len = 0;
    memset(record, 'x', 100);
    record[100] = 23; /* TLS 1.3: the content type ends the inner plaintext */
    uint8_t ad[5] = {23, 3, 3, 0, 101 + 16};
    memcpy(out, record, 101);
    double t0 = cpu_ns();
    for (long i = 0; i < n; i++)
        stub_seal(ctx_seal, record, &out_len, 256, nonce, 12, record, 101, ad, 5);
    double t1 = cpu_ns();
    for (long i = 0; i < n; i++)
        stub_open(ctx_open, out, &out_len, 256, nonce, 12, out, 117, ad, 5);
    double t2 = cpu_ns();
    printf("{\"seal_ns\": %.1f, \"open_ns\": %.1f}\n", (t1 - t0) / n, (t2 - t1) / n);
    return 0;
}
"""
# (function of the stand-in, busted's program there, return probe)
SITES = (("stub_seal", "aead_seal_enter", False), ("stub_open", "aead_open_enter", False),
         ("stub_open", "aead_open_return", True))


class ResponsesServer:
    """A loopback Responses API: every POST is answered by ``records`` SSE events, each
    written on its own (one TLS record each); anything else gets a 404."""

    def __init__(self, cert: Path, key: Path, records: int) -> None:
        self.records = records
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(60)
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buf) < length:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    buf = buf[length:]
                    if head.startswith(b"POST "):
                        self._answer(conn)
                    else:
                        conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        except (OSError, ssl.SSLError, ValueError):
            return

    def _answer(self, conn: ssl.SSLSocket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        base = {"id": "resp_bench", "object": "response", "model": "gpt-bench", "output": []}

        def event(obj: dict[str, Any]) -> None:
            data = f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()
            conn.sendall(b"%x\r\n%b\r\n" % (len(data), data))

        message = {"id": "msg_bench", "type": "message", "role": "assistant",
                   "status": "completed", "content": [{"type": "output_text",
                                                       "text": "done", "annotations": []}]}
        event({"type": "response.created", "response": {**base, "status": "in_progress"}})
        event({"type": "response.output_item.added", "output_index": 0,
               "item": {**message, "status": "in_progress", "content": []}})
        event({"type": "response.content_part.added", "item_id": "msg_bench", "output_index": 0,
               "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})
        delta = {"type": "response.output_text.delta", "item_id": "msg_bench",
                 "output_index": 0, "content_index": 0, "delta": "word "}
        for _ in range(self.records):
            event(delta)
        event({"type": "response.output_item.done", "output_index": 0, "item": message})
        event({"type": "response.completed", "response": {
            **base, "status": "completed", "output": [message],
            "usage": {"input_tokens": 10, "output_tokens": self.records, "total_tokens": 10}}})
        conn.sendall(b"0\r\n\r\n")
        self.answered += 1


def run_codex(codex: str, workdir: Path, port: int, ca: Path) -> dict[str, float]:
    """One ``codex exec`` turn; the CPU seconds its process used."""
    home = Path(tempfile.mkdtemp(prefix="codex-", dir=workdir))
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text(_CONFIG.format(port=port))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "CODEX_HOME": str(home / ".codex"),
           "OPENAI_API_KEY": "sk-bench", "SSL_CERT_FILE": str(ca), "LANG": "C.UTF-8"}
    started = time.monotonic()
    errors = home / "stderr"
    with errors.open("wb") as err_file:  # a file: a full pipe would stall Codex
        proc = subprocess.Popen([codex, "exec", "--skip-git-repo-check", "say one word"],
                                env=env, cwd=home, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err_file,
                                start_new_session=True)
    timer = threading.Timer(RUN_TIMEOUT_S, proc.kill)
    timer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = errors.read_text("utf-8", "replace")
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        raise BenchError(f"codex exited with {proc.returncode}: {err.strip()[-500:]}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.monotonic() - started}


# --- part 1: the stand-in, per call ----------------------------------------------------


def build_stub(workdir: Path) -> Path:
    """Compile the stand-in for aws-lc's AEAD calls; its functions must begin with
    ``push %rbp`` as aws-lc's do in Codex (a probe's cost depends on that instruction)."""
    source, binary = workdir / "aead_stub.c", workdir / "aead_stub"
    source.write_text(STUB_C)
    if shutil.which("gcc") is None:
        raise BenchError("gcc is needed to build the benchmark's stand-in program: "
                         "apt-get install -y gcc (deploy/setup-host.sh installs it).")
    subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer", "-fcf-protection=none",
                    "-o", str(binary), str(source)], check=True, capture_output=True)
    with ElfFile(binary) as elf:
        syms = elf.symbols(("stub_seal", "stub_open"))
        for name in ("stub_seal", "stub_open"):
            if elf.read(syms[name], 1) != b"\x55":
                raise BenchError(f"{name} does not begin with push %rbp: this gcc lays it "
                                 "out unlike aws-lc in Codex, the figures would not apply.")
    return binary


class Probes:
    """Programs of one BPF object attached to the stand-in while a run lasts."""

    def __init__(self, bpf: Any, stub: Path, programs: dict[str, str]) -> None:
        self.bpf, self.stub, self.programs = bpf, str(stub).encode(), programs

    def __enter__(self) -> Probes:
        for sym, fn, ret in SITES:
            attach = self.bpf.attach_uretprobe if ret else self.bpf.attach_uprobe
            attach(name=self.stub, sym=sym.encode(), fn_name=self.programs[fn].encode())
        return self

    def __exit__(self, *_exc: object) -> None:
        for sym, _fn, ret in SITES:
            detach = self.bpf.detach_uretprobe if ret else self.bpf.detach_uprobe
            try:
                detach(name=self.stub, sym=sym.encode())
            except Exception:  # noqa: BLE001 - bcc raises bare Exception; the run is over
                pass


class RealPrograms:
    """busted's kernel programs compiled as the monitor compiles them (one text with
    busted.h, the default cflags), their ring buffer drained by a thread."""

    def __init__(self) -> None:
        from bcc import BPF

        from busted.config import MonitorConfig
        from busted.sources.kernel import cflags, program_text

        self.bpf = BPF(text=program_text().encode(), cflags=cflags(MonitorConfig(source="bpf")))
        self.records = 0
        self.bpf[b"events"].open_ring_buffer(self._count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _count(self, _ctx: Any, _data: Any, _size: int) -> int:
        self.records += 1
        return 0

    def _drain(self) -> None:
        while not self._stop.is_set():
            self.bpf.ring_buffer_poll(50)

    def stats(self) -> dict[str, tuple[int, int]]:
        """(runs, ns) of the aead_* programs (the kernel's run counters)."""
        out = {}
        for name, fn in self.bpf.funcs.items():
            label = name.decode() if isinstance(name, bytes) else str(name)
            found = bpf_syscall.prog_run_stats(fn.fd) if label.startswith("aead_") else None
            if found is not None:
                out[label] = found
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.bpf.cleanup()


def run_stub(stub: Path, calls: int) -> dict[str, float]:
    out = subprocess.run([str(stub), str(calls)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def per_call(stub: Path, rounds: int, calls: int, say) -> dict[str, Any]:
    """ns per seal / open call with no probe, with the floor, with busted's programs."""
    from bcc import BPF

    empty = BPF(text=EMPTY_PROBE)
    real = RealPrograms()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "floor": [], "on": []}
    stats_setting = enable_bpf_stats()
    try:
        floor = Probes(empty, stub, {fn: "empty" for _sym, fn, _ret in SITES})
        busted = Probes(real.bpf, stub, {fn: fn for _sym, fn, _ret in SITES})
        before = real.stats()
        for _i, phase in alternating(rounds, ("off", "floor", "on"), say, "stand-in round"):
            if phase == "off":
                runs["off"].append(run_stub(stub, calls))
            else:
                with floor if phase == "floor" else busted:
                    runs[phase].append(run_stub(stub, calls))
        after = real.stats()
        records = real.records
    finally:
        restore_bpf_stats(stats_setting)
        real.close()
        empty.cleanup()
    out: dict[str, Any] = {"calls_per_run": calls, "ring_records": records}
    for call in ("seal", "open"):
        off = statistics.median(r[f"{call}_ns"] for r in runs["off"])
        out[call] = {"no_probe_ns": round(off, 1)}
        for phase in ("floor", "on"):
            value = statistics.median(r[f"{call}_ns"] for r in runs[phase])
            out[call][f"{phase}_added_ns"] = round(value - off, 1)
    out["bpf_ns_per_run"] = {name: p["ns_per_run"] for name, p in
                             bpf_cost(before, after, calls * rounds)["programs"].items()}
    return out


# --- part 2: real Codex turns ------------------------------------------------------------


def on_codex(codex: str, workdir: Path, rounds: int, records: int, say) -> dict[str, Any]:
    """The real probes on real Codex turns: probe runs per turn and BPF ns per run."""
    ca, cert, key = make_certificates(workdir, "localhost", "IP:127.0.0.1")
    server = ResponsesServer(cert, key, records)
    try:
        say(f"codex: {codex}; warming up ...")
        run_codex(codex, workdir, server.port, ca)  # the 300 MB binary into the page cache
        with probes_alone(16384) as kernel:
            kernel.mark("before")
            for i in range(rounds):
                say(f"codex turn {i + 1}/{rounds} with the probes ...")
                run_codex(codex, workdir, server.port, ca)
            kernel.mark("after")
    finally:
        server.close()
    programs = {name: p for name, p in kernel.cost(rounds)["programs"].items()
                if name.startswith("aead_")}
    return {"codex": codex, "records_per_turn": records, "turns": rounds,
            "runs_per_turn": {n: p["runs_per_call"] for n, p in programs.items()},
            "bpf_ns_per_run": {n: p["ns_per_run"] for n, p in programs.items()},
            "lost": kernel.counters.get("lost", 0)}


def _pick_codex(codex: str | None) -> str:
    if codex:
        return codex
    found = sorted(glob.glob(AGENT_CODEX))
    if not found:
        raise BenchError("No Codex binary found under /var/cache/busted/agents: run "
                         "`make setup`, or give one with --codex PATH.")
    return found[-1]


@click.command("rustls", epilog="""\b
Examples:
  sudo busted bench rustls
  sudo busted bench rustls --rounds 7 --calls 200000 --json
  sudo busted bench rustls --codex ./codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex
""")
@click.option("--codex", type=click.Path(exists=True, dir_okay=False),
              help="The Codex binary (default: the newest one `make setup` installed).")
@click.option("--rounds", type=click.IntRange(1, 20), default=5, show_default=True,
              help="Off/floor/on rounds of the stand-in, and Codex turns.")
@click.option("--calls", type=click.IntRange(1000), default=100_000, show_default=True,
              help="Seal and open calls per stand-in run.")
@click.option("--records", type=click.IntRange(100), default=5_000, show_default=True,
              help="TLS records of each Codex turn's streamed answer.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def rustls_bench(codex: str | None, rounds: int, calls: int, records: int, as_json: bool) -> int:
    """What the rustls (aws-lc) probes cost per TLS record, next to this machine's
    empty-uprobe floor, and what they do on real Codex turns (root, loopback only)."""
    run = BenchRun("rustls", as_json)
    say = run.say
    path = os.path.realpath(_pick_codex(codex))
    try:
        sites = rustls.plan(path)
    except NotLocated as exc:
        raise BenchError(f"{path}: the rustls probes cannot be placed ({exc}).") from exc
    if not sites:
        raise BenchError(f"{path} does not carry rustls.")
    workdir = Path(tempfile.mkdtemp(prefix="busted-bench-rustls-", dir="/tmp"))
    try:
        stub = build_stub(workdir)
        report: dict[str, Any] = {"per_call": per_call(stub, rounds, calls, say),
                                  "codex": on_codex(path, workdir, rounds, records, say)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return run.finish(report, print_report)


def print_report(report: dict[str, Any]) -> None:
    pc, cx = report["per_call"], report["codex"]
    print(f"Per TLS record (stand-in, {pc['calls_per_run']} calls per run, 100-byte records, "
          "medians; time added to the calling thread):")
    for call, what in (("seal", "EVP_AEAD_CTX_seal (a record sent)    "),
                       ("open", "EVP_AEAD_CTX_open (a record received)")):
        c = pc[call]
        print(f"  {what}: no probe {c['no_probe_ns']:.0f} ns, floor (empty programs) "
              f"{c['floor_added_ns']:+.0f} ns, busted {c['on_added_ns']:+.0f} ns")
    bpf = ", ".join(f"{n} {ns} ns" for n, ns in sorted(pc["bpf_ns_per_run"].items()))
    print(f"  BPF time per program run: {bpf}")
    runs = ", ".join(f"{n} {r:.0f}" for n, r in sorted(cx["runs_per_turn"].items()))
    ns = ", ".join(f"{n} {v} ns" for n, v in sorted(cx["bpf_ns_per_run"].items()))
    print(f"Real Codex turns ({cx['records_per_turn']} answer records each): probe runs per "
          f"turn: {runs}")
    print(f"  BPF time per run: {ns}; ring records lost {cx['lost']}")
    print(f"Load average {report['load_average']['start']} -> {report['load_average']['end']}; "
          f"command: {report['command']}")
