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

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from busted.bench.kernel_cost import EmptyUprobes, probes_alone
from busted.bench.measure import (
    BenchRun,
    alternating,
    make_workdir,
    max_copy_of,
    median,
    monitor_running,
    print_busy_warning,
    run_client,
)
from busted.errors import BenchError

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


def measure_client(binary: Path, port: int, ca: Path, calls: int, monitor: Any = None,
                   empty: tuple[EmptyUprobes, list[int]] | None = None,
                   around: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """One measurement in a fresh Go client; ``empty``: empty uprobes at these addresses."""
    argv = [str(binary), "-port", str(port), "-cafile", str(ca), "-calls", str(calls)]
    seen = monitor and monitor.saw_pid  # started after the monitor: wait until it is traced
    if empty is None:
        return run_client(argv, "the Go client", seen=seen, around=around)
    probes, sites = empty[0], [{"addr": addr} for addr in empty[1]]
    hits = 0

    def attach(pid: int) -> None:
        nonlocal hits
        probes.attach(str(binary), pid, sites)
        hits = probes.hits()

    result = run_client(argv, "the Go client", seen=seen, around=around, attach=attach,
                        detach=lambda pid: probes.detach(str(binary), pid, sites))
    result["empty_hits"] = probes.hits() - hits
    return result


# --- the command ------------------------------------------------------------------------------

def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    per_call = {}
    for fn, key in (("Write", "write_us"), ("Read", "read_us")):
        def added(phase: str, key=key) -> float:
            return median([r[phase][key] - r["off"][key] for r in rounds])

        wall = key.replace("_us", "_wall_us")
        per_call[fn] = {
            "no_monitor_us": median([r["off"][key] for r in rounds]),
            "monitor_us": median([r["on"][key] for r in rounds]),
            "added_us": added("on"),
            "wall_added_us": median([r["on"][wall] - r["off"][wall] for r in rounds]),
            "floor_added_us": {name: added(f"floor_{name}") for name in ("entry", "busted", "rets")},
        }
    return {"per_call": per_call, "rounds": rounds,
            "all_clients_captured": all(r["on"].get("captured") for r in rounds)}


def measure_kernel_only(binary: Path, port: int, ca: Path, calls: int,
                        max_copy: int) -> dict[str, Any]:
    """The probes alone (KernelSource in this process) and each program's BPF time."""
    with probes_alone(max_copy) as kernel:
        result = measure_client(binary, port, ca, calls, monitor=kernel, around=kernel.around)
    cost = kernel.cost(int(result["total_calls"]))
    programs = {name: p for name, p in cost["programs"].items() if name.startswith("gotls_")}
    ns = {name: p["ns_per_run"] for name, p in programs.items()}
    read_exit = ns.get("gotls_read_copy", ns.get("gotls_read_return", 0))
    return {"write_us": round(result["write_us"], 3), "read_us": round(result["read_us"], 3),
            "captured": result.get("captured"), "programs": programs,
            "bpf_ns_per_call": {"Write": ns.get("gotls_write_enter"),
                                "Read": ns.get("gotls_read_enter", 0) + read_exit}}


def print_report(report: dict[str, Any]) -> None:
    echo = click.echo
    print_busy_warning(report, "re-run on a quiet machine.")
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
    from busted.bench.probes import Bench

    run = BenchRun("go-tls", as_json)
    say = run.say
    workdir = make_workdir("busted-bench-go-")
    go = find_go()
    say(f"building the Go client with {go} ...")
    binary = build_client(workdir, go)
    sites = probe_sites(binary)
    bench = Bench(workdir, calls, 0.0, 0.0, say)
    try:
        empty = EmptyUprobes()
        results: list[dict[str, Any]] = [{} for _ in range(rounds)]
        for i, phase in alternating(rounds, ("off", "floor", "on"), say):
            result = results[i]
            if phase == "off":
                result["off"] = measure_client(binary, bench.port, bench.ca, calls)
            elif phase == "floor":
                for name, where in sites.items():
                    addrs = where["write"] + where["read"]
                    result[f"floor_{name}"] = measure_client(binary, bench.port, bench.ca, calls,
                                                             empty=(empty, addrs))
            else:
                with monitor_running(workdir, f"m{i}", monitor_arg) as monitor:
                    result["on"] = measure_client(binary, bench.port, bench.ca, calls,
                                                  monitor=monitor)
        say("probes alone: KernelSource in this process, the kernel's BPF run counters ...")
        kernel_only = measure_kernel_only(binary, bench.port, bench.ca, calls,
                                          max_copy_of(monitor_arg))
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
    report["cpus"] = os.cpu_count()
    shutil.rmtree(workdir, ignore_errors=True)
    return run.finish(report, print_report)
