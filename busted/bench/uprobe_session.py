"""What a return probe costs, and whether a uprobe *session* saves it (issue 16).

Ordinary TLS connections pay for an entry probe and a return probe on every call, even
once they are judged uninteresting: a return probe is armed at the function's entry,
whatever the entry program decides. Linux 6.10+ has uprobe sessions
(``BPF_TRACE_UPROBE_SESSION``): one program runs at entry and at return, and when the
entry run returns non-zero the return is not probed at all. bcc cannot attach those, but
it can load the program with that expected attach type, and one ``BPF_LINK_CREATE``
system call attaches it. This script measures, on a tiny function whose first
instruction the kernel emulates (``push %rbp``, like OpenSSL's entry points), ns per
call with: no probe; bcc's uprobe + uretprobe; an entry uprobe only; a session whose
entry skips the return; a session that keeps it.

    sudo .venv/bin/python -m busted.bench.uprobe_session [--calls N] [--rounds R]

Needs root, gcc, and a kernel with uprobe sessions; prints medians over rounds.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from busted.kernel.bpf_syscall import BPF_TRACE_UPROBE_SESSION, link_uprobe_session

TARGET_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
__attribute__((noinline)) int work(int x) { volatile int y = x; return y * 3 + 1; }
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    struct timespec a, b;
    volatile int s = 0;
    getchar(); /* go once the probes are attached */
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) s += work((int)i);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""

PROGRAMS = r"""
BPF_ARRAY(hits, u64, 1);
static __always_inline void count(void) {
    int k = 0;
    u64 *v = hits.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
}
int on_call(struct pt_regs *ctx) { count(); return 0; }
int session_skip(struct pt_regs *ctx) { count(); return 1; }  /* entry: no return probe */
int session_keep(struct pt_regs *ctx) { count(); return 0; }  /* entry and return */
"""

def build_target(workdir: Path) -> tuple[str, int, int]:
    """Compile the target; (path, virtual address of work, its file offset)."""
    source, binary = workdir / "target.c", workdir / "target"
    source.write_text(TARGET_C)
    subprocess.run(["gcc", "-O1", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer",
                    "-fcf-protection=none", "-no-pie", "-o", str(binary), str(source)], check=True)
    symbols = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True)
    vaddr = next(int(line.split()[0], 16) for line in symbols.stdout.splitlines()
                 if line.endswith(" work"))
    return str(binary), vaddr, vaddr - 0x400000  # a non-PIE binary's text starts there


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m busted.bench.uprobe_session")
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from bcc import BPF

    workdir = Path(tempfile.mkdtemp(prefix="busted-session-"))
    path, vaddr, offset = build_target(workdir)
    bpf = BPF(text=PROGRAMS)
    counter = bpf["hits"]

    def timed() -> tuple[float, float]:
        counter[ct.c_int(0)] = ct.c_uint64(0)
        proc = subprocess.Popen([path, str(args.calls)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate("\n")
        return float(out), counter[ct.c_int(0)].value / args.calls

    def with_bcc(ret: bool) -> tuple[float, float]:
        bpf.attach_uprobe(name=path, addr=vaddr, fn_name="on_call")
        if ret:
            bpf.attach_uretprobe(name=path, addr=vaddr, fn_name="on_call")
        try:
            return timed()
        finally:
            bpf.detach_uprobe(name=path, addr=vaddr)
            if ret:
                bpf.detach_uretprobe(name=path, addr=vaddr)

    def with_session(name: str) -> tuple[float, float]:
        prog = bpf.load_func(name, BPF.KPROBE, attach_type=BPF_TRACE_UPROBE_SESSION)
        link = link_uprobe_session(prog.fd, path, offset)
        try:
            return timed()
        finally:
            os.close(link)

    cases = {
        "no probe": timed,
        "uprobe + uretprobe (bcc)": lambda: with_bcc(True),
        "uprobe only (bcc)": lambda: with_bcc(False),
        "session, entry skips the return": lambda: with_session("session_skip"),
        "session, entry keeps the return": lambda: with_session("session_keep"),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            figures[name].append(case())
    print(f"{'':34}{'ns/call':>9}{'programs run/call':>19}")
    for name, runs in figures.items():
        print(f"{name:34}{statistics.median(r[0] for r in runs):>9.1f}"
              f"{statistics.median(r[1] for r in runs):>19.2f}")


if __name__ == "__main__":
    main()
