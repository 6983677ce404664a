"""`busted bench go-tls`: what the Go crypto/tls probes cost a Go program, per call.

A Go client (built here from :data:`GO_CLIENT` with the host's ``go``, stdlib only) talks
TLS over loopback to the Python server of `busted bench probes`
(:mod:`busted.bench.tls_workload`) and times, on one OS thread (``LockOSThread``), its
CPU time (``CLOCK_THREAD_CPUTIME_ID``: a uprobe's trap and BPF program are charged to
the traced thread) per ``(*tls.Conn).Write`` of 100 bytes into a sink and per
``(*tls.Conn).Read`` of a 100-byte record already waiting in the socket (best of 3).

Rounds alternate without and with the real ``busted monitor --source bpf`` (median of
the per-round differences), plus, bound to the client alone, empty uprobes:

- at the functions' first instruction (``cmp``/``lea``: single-stepped by the kernel),
- at the stack check's ``jbe`` where busted probes (emulated),
- at ``Read``'s ``ret`` instructions (single-stepped, as busted's return probes are);

so the report shows what the probe *placement* costs apart from the programs. Then once
the probes alone (KernelSource in this process) with the kernel's per-program run
counters (``kernel.bpf_stats_enabled``): the BPF nanoseconds of each program.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from busted.bench.kernel_cost import EMPTY_PROBE, BenchError, KernelOnly, bpf_cost
from busted.bench.probes import MonitorRun
from busted.errors import PrivilegeError

CAPTURE_TIMEOUT_S = 20
GO_PROGRAMS = ("gotls_write_enter", "gotls_read_enter", "gotls_read_return")

GO_CLIENT = r"""
// The traced program of `busted bench go-tls` (see busted/bench/go_tls.py).
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const record = 100

func threadCPU() time.Duration {
	var ts syscall.Timespec
	const threadClock = 3 // CLOCK_THREAD_CPUTIME_ID
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, threadClock, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}

type client struct {
	addr string
	cfg  *tls.Config
}

func (c *client) dial() (*tls.Conn, *net.TCPConn) {
	raw, err := net.Dial("tcp", c.addr)
	if err != nil {
		panic(err)
	}
	tcp := raw.(*net.TCPConn)
	tcp.SetReadBuffer(16 << 20)
	tcp.SetWriteBuffer(16 << 20)
	conn := tls.Client(raw, c.cfg)
	if err := conn.Handshake(); err != nil {
		panic(err)
	}
	return conn, tcp
}

func request(size int, extra string) []byte {
	body := `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "` +
		strings.Repeat("x", size) + `"}]}`
	return []byte(fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"+
		"Content-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s", extra, len(body), body))
}

// response reads one Content-Length response; returns its body length.
func response(conn *tls.Conn, buf []byte) int {
	var have []byte
	for !strings.Contains(string(have), "\r\n\r\n") {
		n, err := conn.Read(buf)
		if err != nil {
			panic(err)
		}
		have = append(have, buf[:n]...)
	}
	head, rest, _ := strings.Cut(string(have), "\r\n\r\n")
	length := 0
	for _, line := range strings.Split(strings.ToLower(head), "\r\n") {
		if strings.HasPrefix(line, "content-length:") {
			fmt.Sscan(strings.TrimSpace(strings.TrimPrefix(line, "content-length:")), &length)
		}
	}
	for got := len(rest); got < length; {
		n, err := conn.Read(buf)
		if err != nil {
			panic(err)
		}
		got += n
	}
	return length
}

func inSocket(tcp *net.TCPConn) int {
	sc, _ := tcp.SyscallConn()
	var n int32
	sc.Control(func(fd uintptr) {
		syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	})
	return int(n)
}

func waitInSocket(tcp *net.TCPConn, atLeast int) {
	last, since := -1, time.Now()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		have := inSocket(tcp)
		if have != last {
			last, since = have, time.Now()
		} else if have >= atLeast && time.Since(since) > 30*time.Millisecond {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (c *client) percall(calls int) map[string]float64 {
	sink, _ := c.dial()
	head := "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n" +
		"Content-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n"
	sink.Write([]byte(head + `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "`))
	piece := []byte(strings.Repeat("a", record))
	wall, cpu := time.Now(), threadCPU()
	for i := 0; i < calls; i++ {
		sink.Write(piece)
	}
	writeCPU, writeWall := threadCPU()-cpu, time.Since(wall)
	sink.Close()

	conn, tcp := c.dial()
	buf := make([]byte, 65536)
	batch := 5000
	reads := 0
	var readCPU, readWall time.Duration
	for done := 0; done < calls; done += batch {
		conn.Write(request(200, fmt.Sprintf("x-bench-burst: %d\r\n", batch)))
		waitInSocket(tcp, batch*record)
		var have []byte
		for !strings.Contains(string(have), "\r\n\r\n") { // the header record, not timed
			n, _ := conn.Read(buf)
			have = append(have, buf[:n]...)
		}
		_, rest, _ := strings.Cut(string(have), "\r\n\r\n")
		got := len(rest)
		wall, cpu := time.Now(), threadCPU()
		for got < batch*record {
			n, err := conn.Read(buf) // one record each
			if err != nil {
				panic(err)
			}
			got += n
			reads++
		}
		readCPU += threadCPU() - cpu
		readWall += time.Since(wall)
	}
	conn.Close()
	us := func(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / 1000 / float64(n) }
	return map[string]float64{"write_us": us(writeCPU, calls), "write_wall_us": us(writeWall, calls),
		"read_us": us(readCPU, reads), "read_wall_us": us(readWall, reads),
		"calls": float64(calls + reads)}
}

func main() {
	port := flag.Int("port", 0, "server port on 127.0.0.1")
	cafile := flag.String("cafile", "", "CA to trust")
	calls := flag.Int("calls", 10000, "Write and Read calls timed")
	flag.Parse()
	runtime.LockOSThread() // this goroutine's calls all run, and are timed, on one thread
	pem, err := os.ReadFile(*cafile)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &client{fmt.Sprintf("127.0.0.1:%d", *port),
		&tls.Config{RootCAs: pool, ServerName: "api.openai.com", NextProtos: []string{"http/1.1"}}}
	conn, _ := c.dial()
	buf := make([]byte, 65536)
	warm := func() {
		conn.Write(request(200, ""))
		response(conn, buf)
	}
	warm()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "warm":
			warm()
			fmt.Println("warmed")
		case "go":
			best := map[string]float64{}
			total := 0.0
			for i := 0; i < 3; i++ {
				once := c.percall(*calls)
				total += once["calls"]
				delete(once, "calls")
				for k, v := range once {
					if old, ok := best[k]; !ok || v < old {
						best[k] = v
					}
				}
			}
			best["total_calls"] = total
			out, _ := json.Marshal(best)
			fmt.Println(string(out))
			return
		}
	}
}
"""


def find_go() -> str:
    for candidate in (shutil.which("go"), "/usr/bin/go", str(Path(sys.executable).parent / "go")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("No Go toolchain to build the benchmark's client.",
                     "Install Debian's golang-go (deploy/setup-host.sh does).")


def build_client(workdir: Path, go: str) -> Path:
    src = workdir / "goclient"
    src.mkdir(exist_ok=True)
    (src / "go.mod").write_text("module gobench\n\ngo 1.19\n")
    (src / "main.go").write_text(GO_CLIENT)
    out = workdir / "go-tls-bench"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "GOCACHE": str(workdir / "gocache"),
           "GOPATH": str(workdir / "gopath"), "GOTOOLCHAIN": "local", "GOPROXY": "off",
           "GOTELEMETRY": "off", "CGO_ENABLED": "0"}
    run = subprocess.run([go, "build", "-ldflags", "-s -w", "-o", str(out), "."], cwd=src, env=env,
                         capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise BenchError(f"building the Go client failed:\n{run.stderr[-2000:]}")
    return out


# --- empty uprobes: what the placement alone costs -------------------------------------------

def probe_sites(binary: Path) -> dict[str, dict[str, list[int]]]:
    """Addresses of each placement, per direction: the functions' first instruction, the
    stack-check jbe plus Read's copy (busted's placement), the jbe plus Read's rets."""
    from busted.kernel.tls import gotls
    from busted.kernel.tls.elf import ElfFile

    sites = {s.fn: s for s in gotls.plan(binary)}
    write, read_enter = sites["gotls_write_enter"], sites["gotls_read_enter"]
    read_entry = read_enter.addr - read_enter.offset
    with ElfFile(binary) as elf:
        funcs = gotls.find_pclntab(elf).find((gotls.READ,))
        read = funcs[gotls.READ]
        rets = gotls.return_sites(elf.read(read.entry, read.end - read.entry), read.entry)
    copy = [s.addr for s in sites.values() if s.fn == "gotls_read_copy"]
    return {
        "entry": {"write": [write.addr - write.offset], "read": [read_entry]},
        "busted": {"write": [write.addr], "read": [read_enter.addr, *copy]},
        "rets": {"write": [write.addr], "read": [read_enter.addr, *rets]},
    }


class EmptyProbes:
    """Empty uprobes (a hit counter) bound to one client pid at a time."""

    def __init__(self) -> None:
        from bcc import BPF

        self.bpf = BPF(text=EMPTY_PROBE)

    def attach(self, binary: Path, pid: int, addrs: list[int]) -> None:
        for addr in addrs:
            self.bpf.attach_uprobe(name=str(binary).encode(), addr=addr, fn_name=b"empty", pid=pid)

    def detach(self, binary: Path, pid: int, addrs: list[int]) -> None:
        for addr in addrs:
            try:
                self.bpf.detach_uprobe(name=str(binary).encode(), addr=addr, pid=pid)
            except Exception:  # noqa: BLE001 - the client is gone; its probe went with it
                pass

    def hits(self) -> int:
        return sum(v.value for v in self.bpf["hits"].values())


# --- one client run ------------------------------------------------------------------------------

def run_client(binary: Path, port: int, ca: Path, calls: int, monitor: Any = None,
               empty: tuple[EmptyProbes, list[int]] | None = None,
               around: tuple[Any, Any] | None = None) -> dict[str, Any]:
    argv = [str(binary), "-port", str(port), "-cafile", str(ca), "-calls", str(calls)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    attached = False
    try:
        if proc.stdout.readline().strip() != "ready":
            raise BenchError("the Go client failed to start")
        captured = None
        if monitor is not None:  # started after the monitor: wait until it is traced
            captured = monitor.saw_pid(proc.pid, 2.0)
            deadline = time.monotonic() + CAPTURE_TIMEOUT_S
            while not captured and time.monotonic() < deadline:
                proc.stdin.write("warm\n")
                proc.stdin.flush()
                proc.stdout.readline()
                captured = monitor.saw_pid(proc.pid, 0.5)
        if empty is not None:
            empty[0].attach(binary, proc.pid, empty[1])
            attached = True
            hits = empty[0].hits()
        if around:
            around[0]()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if around:
            around[1]()
        proc.wait(60)
    finally:
        if attached:
            empty[0].detach(binary, proc.pid, empty[1])
        if proc.poll() is None:
            proc.kill()
    if not line.startswith("{"):
        raise BenchError(f"the Go client produced no result (exit {proc.returncode})")
    result = json.loads(line)
    if captured is not None:
        result["captured"] = captured
    if empty is not None:
        result["empty_hits"] = empty[0].hits() - hits
    return result


# --- the command ------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    per_call = {}
    for fn, key in (("Write", "write_us"), ("Read", "read_us")):
        def added(phase: str, key=key) -> float:
            return _median([r[phase][key] - r["off"][key] for r in rounds])

        wall = key.replace("_us", "_wall_us")
        per_call[fn] = {
            "no_monitor_us": _median([r["off"][key] for r in rounds]),
            "monitor_us": _median([r["on"][key] for r in rounds]),
            "added_us": added("on"),
            "wall_added_us": _median([r["on"][wall] - r["off"][wall] for r in rounds]),
            "floor_added_us": {name: added(f"floor_{name}") for name in ("entry", "busted", "rets")},
        }
    return {"per_call": per_call, "rounds": rounds,
            "all_clients_captured": all(r["on"].get("captured") for r in rounds)}


def measure_kernel_only(binary: Path, port: int, ca: Path, calls: int,
                        max_copy: int) -> dict[str, Any]:
    """The probes alone (KernelSource in this process) and each program's BPF time."""
    logging.getLogger("busted.capture").setLevel(logging.WARNING)
    kernel = KernelOnly(max_copy)
    kernel.start()
    marks: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        result = run_client(binary, port, ca, calls, monitor=kernel, around=(
            lambda: marks.__setitem__("before", kernel.program_stats()),
            lambda: marks.__setitem__("after", kernel.program_stats())))
    finally:
        kernel.stop()
    cost = bpf_cost(marks.get("before", {}), marks.get("after", {}), int(result["total_calls"]))
    programs = {name: p for name, p in cost["programs"].items() if name.startswith("gotls_")}
    ns = {name: p["ns_per_run"] for name, p in programs.items()}
    read_exit = ns.get("gotls_read_copy", ns.get("gotls_read_return", 0))
    return {"write_us": round(result["write_us"], 3), "read_us": round(result["read_us"], 3),
            "captured": result.get("captured"), "programs": programs,
            "bpf_ns_per_call": {"Write": ns.get("gotls_write_enter"),
                                "Read": ns.get("gotls_read_enter", 0) + read_exit}}


def print_report(report: dict[str, Any]) -> None:
    echo = click.echo
    load = report["load_average"]
    if max(load["start"], load["end"]) > report["cpus"]:
        echo(f"WARNING: the machine was busy (load average {load['start']} -> {load['end']}, "
             f"{report['cpus']} CPUs): re-run on a quiet machine.")
    echo(f"Go crypto/tls ({report['go_version']}), CPU time per call of the client thread "
         "(µs; added = with minus without, median of rounds):")
    for fn, f in report["per_call"].items():
        floor = f["floor_added_us"]
        echo(f"  (*Conn).{fn:<6} 100 B  {f['no_monitor_us']:6.2f} -> {f['monitor_us']:6.2f}  "
             f"added {f['added_us']:+.2f} (wall {f['wall_added_us']:+.2f}); probes alone "
             f"{f['probes_only_added_us']:+.2f}")
        echo(f"      empty uprobes: at the entry (single-stepped) {floor['entry']:+.2f}, "
             f"at busted's sites {floor['busted']:+.2f}, jbe + every ret {floor['rets']:+.2f}")
    ko = report["kernel_only"]
    echo("  BPF programs (kernel run counters): " + ", ".join(
        f"{name} {p['ns_per_run']} ns/run ({p['runs_per_call']:.2f} runs/call)"
        for name, p in ko["programs"].items()))
    echo(f"  BPF ns per call: Write {ko['bpf_ns_per_call']['Write']}, "
         f"Read {ko['bpf_ns_per_call']['Read']}")
    echo(f"Every monitored client captured: {'yes' if report['all_clients_captured'] else 'NO'}")


@click.command(epilog="""\b
Examples:
  sudo busted bench go-tls
  sudo busted bench go-tls --rounds 5 --json > go-tls.json
""")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Rounds of off / empty probes / on (medians are taken over rounds).")
@click.option("--calls", type=click.IntRange(1000), default=10_000, show_default=True,
              help="Write and Read calls timed per measurement (best of 3).")
@click.option("--monitor-arg", multiple=True, metavar="ARG",
              help="Extra argument for the monitor (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def go_tls(rounds: int, calls: int, monitor_arg: tuple[str, ...], as_json: bool) -> int:
    """What the Go crypto/tls probes cost a Go program: µs per Write / Read with the
    monitor on vs off, next to empty uprobes at the same places (root, loopback only)."""
    from busted.bench.probes import Bench, _max_copy

    if os.geteuid() != 0:
        raise PrivilegeError("busted bench go-tls loads eBPF programs and needs root.",
                             "Run it with sudo.")
    say = (lambda msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    load_start = round(os.getloadavg()[0], 2)
    workdir = Path(tempfile.mkdtemp(prefix="busted-bench-go-", dir="/tmp"))
    workdir.chmod(0o711)  # the unprivileged worker account must traverse it
    go = find_go()
    say(f"building the Go client with {go} ...")
    binary = build_client(workdir, go)
    sites = probe_sites(binary)
    bench = Bench(workdir, calls, 0.0, 0.0, say)
    try:
        empty = EmptyProbes()
        results = []
        for i in range(rounds):
            result: dict[str, Any] = {}
            order = ("off", "floor", "on") if i % 2 == 0 else ("on", "floor", "off")
            for phase in order:
                say(f"round {i + 1}/{rounds}: {phase} ...")
                if phase == "off":
                    result["off"] = run_client(binary, bench.port, bench.ca, calls)
                elif phase == "floor":
                    for name, where in sites.items():
                        addrs = where["write"] + where["read"]
                        result[f"floor_{name}"] = run_client(binary, bench.port, bench.ca, calls,
                                                             empty=(empty, addrs))
                else:
                    monitor = MonitorRun(workdir, f"m{i}", monitor_arg)
                    monitor.start()
                    try:
                        result["on"] = run_client(binary, bench.port, bench.ca, calls,
                                                  monitor=monitor)
                    finally:
                        monitor.stop()
            results.append(result)
        say("probes alone: KernelSource in this process, the kernel's BPF run counters ...")
        kernel_only = measure_kernel_only(binary, bench.port, bench.ca, calls,
                                          _max_copy(monitor_arg))
    finally:
        bench.close()
    report = summarize(results)
    report["kernel_only"] = kernel_only
    for fn, key in (("Write", "write_us"), ("Read", "read_us")):
        report["per_call"][fn]["probes_only_added_us"] = round(
            kernel_only[key] - report["per_call"][fn]["no_monitor_us"], 3)
    report["go_version"] = subprocess.run([go, "env", "GOVERSION"], capture_output=True,
                                          text=True).stdout.strip()
    report["sites"] = {name: {d: [hex(a) for a in addrs] for d, addrs in where.items()}
                       for name, where in sites.items()}
    report["command"] = "busted bench go-tls " + " ".join(sys.argv[3:])
    report["load_average"] = {"start": load_start, "end": round(os.getloadavg()[0], 2)}
    report["cpus"] = os.cpu_count()
    shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
