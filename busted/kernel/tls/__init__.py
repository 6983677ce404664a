"""Where TLS plaintext can be read, per file: which TLS stack a binary carries and
where its probes go.

One module per stack. Each one exposes:

- ``NAME``: how reports name it ("OpenSSL", "BoringSSL", ...);
- ``BPF``: the ``bpf/`` file holding its kernel programs (several stacks may share one);
- ``carries(path) -> bool``: does this ELF file hold the stack (cheap, cached per file:
  every exec on the host asks it);
- ``plan(path) -> list[ProbeSite]``: the probes to attach (cached); raises
  :class:`NotLocated` when the stack is there but its functions cannot be found with
  certainty, so the capture reports the program as blind instead of guessing.

This package is the dispatcher: :func:`stack_of` asks the stacks in order,
:func:`plan` returns the chosen stack's sites, :func:`discover` lists every file to
probe at start. Attaching is ``busted.sources.tls_probes``'s job.
"""

from __future__ import annotations

import glob
import importlib
import os
from collections.abc import Iterable
from types import ModuleType

from busted.kernel.tls import openssl
from busted.kernel.tls.elf import ElfError
from busted.kernel.tls.site import NotLocated, ProbeSite

__all__ = ["NotLocated", "ProbeSite", "ElfError", "STACK_MODULES", "stacks", "stack_of",
           "carries_tls", "plan", "discover", "targets_of_process", "bpf_programs"]

# Asked in this order: a file is given to the first stack that claims it.
STACK_MODULES = ("openssl", "boringssl", "gotls", "rustls")

# Programs that carry their own TLS, looked for at start (so they are probed before they
# run): names on PATH, and where agents install themselves.
PROGRAM_NAMES = ("node", "nodejs", "bun", "deno", "claude", "codex")
AGENT_GLOBS = (
    "/var/cache/busted/agents/*/package/claude",
    "/var/cache/busted/agents/*/package/bin/bun",
    "/var/cache/busted/agents/*/package/vendor/*/bin/codex",
    "/root/.local/share/claude/versions/*",
    "/home/*/.local/share/claude/versions/*",
    "/root/.bun/bin/bun",
    "/home/*/.bun/bin/bun",
    "/usr/local/lib/node_modules/@openai/codex/vendor/*/bin/codex",
    "/usr/lib/node_modules/@openai/codex/vendor/*/bin/codex",
    "/usr/local/lib/node_modules/@anthropic-ai/claude-code*/claude",
    "/usr/lib/node_modules/@anthropic-ai/claude-code*/claude",
)


def stacks() -> list[ModuleType]:
    return [importlib.import_module(f"busted.kernel.tls.{name}") for name in STACK_MODULES]


def stack_of(path: str | os.PathLike) -> ModuleType | None:
    """The TLS stack module this ELF file carries, or None."""
    for stack in stacks():
        if stack.carries(path):
            return stack
    return None


def carries_tls(path: str | os.PathLike) -> bool:
    return stack_of(path) is not None


def plan(path: str | os.PathLike) -> tuple[str, list[ProbeSite]]:
    """(stack name, probe sites) for one file; ("", []) when it carries no known stack.

    Raises NotLocated when the stack is recognised but its functions are not found.
    """
    stack = stack_of(path)
    if stack is None:
        return "", []
    return stack.NAME, stack.plan(path)


def bpf_programs() -> tuple[str, ...]:
    """The bpf/ files every stack needs, once each, in stack order."""
    seen: list[str] = []
    for stack in stacks():
        if stack.BPF and stack.BPF not in seen:
            seen.append(stack.BPF)
    return tuple(seen)


def programs_on_host(names: Iterable[str] = PROGRAM_NAMES,
                     globs: Iterable[str] = AGENT_GLOBS) -> set[str]:
    """Well-known programs that carry their own TLS, on PATH or where agents install."""
    candidates: set[str] = set()
    for d in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":"):
        for name in names:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                candidates.add(os.path.realpath(p))
    for pattern in globs:
        for p in glob.glob(pattern):
            if os.path.isfile(p) and os.access(p, os.X_OK):
                candidates.add(os.path.realpath(p))
    return {p for p in candidates if carries_tls(p)}


def targets_of_process(pid: int, proc: str = "/proc") -> set[str]:
    """Files with TLS that one process runs: libssl copies and its executable."""
    found = openssl.mapped_libraries(pid, proc)
    exe = openssl.process_executable(pid, proc)
    if exe and carries_tls(exe):
        found.add(exe)
    return found


def discover(proc: str = "/proc") -> set[str]:
    """Every file to probe now: system libssl, what running processes run, known agents."""
    found = {p for p in openssl.system_libraries() if openssl.has_openssl(p)}
    found |= programs_on_host()
    for pid in openssl.pids(proc):
        found |= targets_of_process(pid, proc)
    return found
