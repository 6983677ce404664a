"""Configuration value objects and every default, in one place.

``MonitorConfig`` is built once by ``busted monitor`` from its flags, handed (pickled) to
each worker process, and never mutated. Sections are grouped by the worker that reads
them; a worker reads only its own section plus the common fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RUNTIME_DIR = Path("/run/busted")

# Group whose members may read the published stream (events.sock) and run `busted ui`.
STREAM_GROUP = "busted"
# Unprivileged account that workers parsing untrusted payloads switch to after set-up.
WORKER_USER = "busted"

# Pipeline tuning (bench/README.md, "Pipeline": batches of 64 with a 1 ms flush).
BATCH_SIZE = 64
FLUSH_INTERVAL_S = 0.001
HWM_MESSAGES = 1000  # per socket; x BATCH_SIZE events of buffering per hop

# Supervision.
HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_TIMEOUT_S = 5.0  # silent this long -> the worker is killed and restarted
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 10.0
BACKOFF_RESET_AFTER_S = 30.0  # a worker that ran this long starts again from BACKOFF_INITIAL_S
STOP_TIMEOUT_S = 4.0  # whole shutdown stays under 5 s

# Capture defaults (the kernel-capture options).
# A connection that carries requests (POST/PUT/PATCH, HTTP/2, a client WebSocket frame)
# is copied whole up to DEFAULT_MAX_COPY per call: agents' requests are tens of KB (a
# Gemini CLI request ~32 KB, Claude Code's up to several hundred KB). Any other call is
# copied up to DEFAULT_PEEK_COPY, enough to classify it (bpf/busted.h, copy_limit).
DEFAULT_MAX_COPY = 1024 * 1024
MAX_COPY_LIMIT = 4 * 1024 * 1024
DEFAULT_PEEK_COPY = 16 * 1024
PEEK_COPY_LIMIT = 256 * 1024
DEFAULT_PLAINTEXT_PORTS = (11434,)  # Ollama


@dataclass(frozen=True)
class MonitorConfig:
    """Everything ``busted monitor`` was asked to do."""

    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    # --- capture -----------------------------------------------------------------
    source: str = "bpf"  # "bpf", "synthetic", "replay:FILE"
    rate: float = 50.0  # synthetic source: events per second (0 = as fast as possible)
    count: int = 0  # synthetic source: stop after this many events (0 = no limit)
    exit_when_done: bool = False  # stop the monitor once a finite source is exhausted
    max_copy: int = DEFAULT_MAX_COPY  # bytes copied per call on request connections
    peek_copy: int = DEFAULT_PEEK_COPY  # bytes copied per call on other connections
    plaintext_ports: tuple[int, ...] = DEFAULT_PLAINTEXT_PORTS
    ring_pages: int = 4096  # ring buffer size in pages (16 MiB: a few whole requests)
    use_kprobes: bool = False
    pids: tuple[int, ...] = ()  # bind the OpenSSL uprobes to these processes only
    # --- identity ------------------------------------------------------------------
    kubeconfig: str = ""  # use this kubeconfig (otherwise in-cluster, when in a cluster)
    node_name: str = ""  # this node's name in the cluster (default $NODE_NAME or hostname)
    kubernetes: bool = True  # resolve pods when a cluster is reachable
    # --- classify ----------------------------------------------------------------
    reassembly_max_bytes: int = 1024 * 1024  # per connection
    reassembly_total_bytes: int = 64 * 1024 * 1024
    # --- policy ------------------------------------------------------------------
    policy_dirs: tuple[Path, ...] = ()
    rules: tuple[str, ...] = ()
    policy_error: str = "allow"  # decision when evaluation fails: "allow" or "deny"
    policy_scope: str = "all"  # "all" or "llm" (only LLM/MCP events are evaluated)
    insecure_policy_perms: bool = False  # root: accept policy files others could change
    # --- enforcement ---------------------------------------------------------------
    enforce: bool = False
    dry_run: bool = False
    fail_closed: bool = False
    hold_deadline_ms: int = 250
    # --- output ------------------------------------------------------------------
    format: str = "text"  # "text" or "json"
    outputs: tuple[str, ...] = ()  # extra sinks: "file:PATH", "webhook:URL", "otlp:URL", ...
    verbose: bool = False
    # Network sinks (busted/sinks.py): spool, headers (their sources, never values), TLS.
    spool_dir: str = ""  # "" = /var/lib/busted/spool as root, else ~/.local/state/busted/spool
    spool_max: int = 1 << 30  # bytes per sink's spool; the oldest events go beyond it
    output_headers: tuple[str, ...] = ()  # "file:PATH" or "env:VAR"
    output_ca: str = ""  # CA bundle (PEM) that replaces the system's for https / syslog+tls
    output_gzip: bool = False  # gzip webhook and OTLP bodies
    otlp_content: bool = False  # prompts and answers in OTLP records (the conventions' opt-in)
    run_id: str = ""  # this monitor run: the prefix of every event_id (boot id + start time)
    # --- process model -------------------------------------------------------------
    drop_privileges: bool = True
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    send_timeout_ms: int = 100  # a middle stage waits this long for a slow peer before dropping

    def replace(self, **changes) -> MonitorConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Endpoints:
    """Socket paths inside the runtime directory.

    ``pipe/`` holds the internal pipeline sockets (0700, owned by the worker account so
    a restarted unprivileged worker can reconnect); ``control.sock`` is root-only;
    ``events.sock`` is the published stream (0660, group ``busted``).
    """

    root: Path
    pipe: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pipe", self.root / "pipe")

    def stage_input(self, role: str) -> str:
        """Where a pipeline stage binds its PULL socket."""
        return f"ipc://{self.pipe / (role + '.sock')}"

    @property
    def feedback(self) -> str:
        """Capture's PULL socket for commands coming back up the pipeline (verdicts)."""
        return f"ipc://{self.pipe / 'feedback.sock'}"

    @property
    def supervisor(self) -> str:
        """The supervisor's ROUTER endpoint for worker heartbeats."""
        return f"ipc://{self.pipe / 'supervisor.sock'}"

    @property
    def control(self) -> str:
        """The supervisor's ROUTER endpoint for `busted status` / `busted stop`."""
        return f"ipc://{self.root / 'control.sock'}"

    @property
    def events(self) -> str:
        """The PUB socket every processed event is published on."""
        return f"ipc://{self.root / 'events.sock'}"

    @property
    def lock_file(self) -> Path:
        return self.root / "monitor.lock"
