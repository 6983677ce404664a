"""`busted monitor`: start the supervisor and its workers in the foreground."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import click

from busted.config import (
    DEFAULT_MAX_COPY,
    DEFAULT_PEEK_COPY,
    DEFAULT_RUNTIME_DIR,
    MAX_COPY_LIMIT,
    PEEK_COPY_LIMIT,
    MonitorConfig,
)
from busted.errors import PrivilegeError, UsageError
from busted.metrics import parse_address
from busted.rootfiles import check_private, write_private
from busted.sinks import parse_spec
from busted.sources import parse_source
from busted.spool import MIN_MAX_BYTES as MIN_SPOOL_BYTES
from busted.workers.output_worker import new_run_id

log = logging.getLogger("busted.monitor")


def _config_from_flags(**opts) -> MonitorConfig:
    if opts["max_copy"] < 64 or opts["max_copy"] > MAX_COPY_LIMIT:
        raise UsageError(f"--max-copy must be between 64 and {MAX_COPY_LIMIT} bytes.")
    if opts["peek_copy"] < 64 or opts["peek_copy"] > min(PEEK_COPY_LIMIT, opts["max_copy"]):
        raise UsageError(f"--peek-copy must be between 64 and {PEEK_COPY_LIMIT} bytes, "
                         "and not above --max-copy.")
    if opts["dry_run"] and not opts["enforce"]:
        raise UsageError("--dry-run only makes sense with --enforce.")
    if opts["fail_closed"] and not opts["enforce"]:
        raise UsageError("--fail-closed only makes sense with --enforce.")
    if opts["enforce"]:
        if not (opts["policy_dir"] or opts["rule"]):
            raise UsageError(
                "--enforce needs a policy to enforce.",
                "Add --policy-dir DIR or --rule 'package busted ...' (see policies/README.md).",
            )
        if opts["source"] != "bpf":
            raise UsageError(
                f"--enforce acts on real processes, so it needs --source bpf "
                f"(not {opts['source']!r}).",
                "Drop --source, or drop --enforce to see decisions on synthetic or replayed events.",
            )
    for directory in opts["policy_dir"]:
        if not Path(directory).is_dir():
            raise UsageError(f"--policy-dir {directory}: no such directory.")
    if opts["policy_dir"] and os.geteuid() == 0 and not opts["insecure_policy_perms"]:
        from busted.policy import perms  # the policy worker checks again at each reload

        perms.check([Path(d).absolute() for d in opts["policy_dir"]])
    source = opts["source"]
    kind, arg = parse_source(source)
    if kind == "replay" and not Path(arg).is_file():
        raise UsageError(f"--source replay:{arg}: no such file.")
    network_sinks = False
    if len(set(opts["output"])) < len(opts["output"]):
        raise UsageError("the same --output is given twice.")
    for spec in opts["output"]:
        kind, args = parse_spec(spec)
        if kind == "file":  # refused now rather than by the output worker later
            check_private(args[0], "the --output file")
        network_sinks |= kind not in ("file", "syslog-udp")
    _check_sink_flags(opts, network_sinks)
    if opts["metrics"]:
        parse_address(opts["metrics"])
    return MonitorConfig(
        runtime_dir=Path(opts["runtime_dir"]).absolute(),
        source=source,
        rate=opts["rate"],
        count=opts["count"],
        exit_when_done=opts["exit_when_done"] or source.startswith("replay:"),
        max_copy=opts["max_copy"],
        peek_copy=opts["peek_copy"],
        plaintext_ports=tuple(opts["plaintext_port"]) or MonitorConfig.plaintext_ports,
        use_kprobes=opts["kprobes"],
        pids=tuple(opts["pids"]),
        policy_dirs=tuple(Path(d).absolute() for d in opts["policy_dir"]),
        rules=tuple(opts["rule"]),
        policy_error=opts["policy_error"],
        policy_scope=opts["policy_scope"],
        insecure_policy_perms=opts["insecure_policy_perms"],
        enforce=opts["enforce"],
        dry_run=opts["dry_run"],
        fail_closed=opts["fail_closed"],
        hold_deadline_ms=opts["hold_deadline_ms"],
        format=opts["format"],
        outputs=tuple(opts["output"]),
        spool_dir=str(Path(opts["spool_dir"]).absolute()) if opts["spool_dir"] else "",
        spool_max=parse_size(opts["spool_max"], "--spool-max"),
        output_headers=tuple(opts["output_header"]),
        output_ca=str(Path(opts["output_ca"]).absolute()) if opts["output_ca"] else "",
        output_gzip=opts["output_gzip"],
        otlp_content=opts["otlp_content"],
        run_id=new_run_id(),
        verbose=opts["verbose"],
        drop_privileges=not opts["no_drop_privileges"],
        heartbeat_timeout_s=opts["heartbeat_timeout"],
        kubeconfig=str(Path(opts["kubeconfig"]).absolute()) if opts["kubeconfig"] else "",
        node_name=opts["node_name"] or "",
        kubernetes=not opts["no_kubernetes"],
    )


def parse_size(text: str, flag: str) -> int:
    """``1G``, ``512M``, ``64K`` or bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise UsageError(f"{flag} {text}: write a size such as 1G, 512M or 65536.")
    size = int(match[1]) << (10 * " KMGT".index(match[2].upper() or " "))
    if size < MIN_SPOOL_BYTES:
        raise UsageError(f"{flag} {text}: at least {MIN_SPOOL_BYTES >> 10}K.")
    return size


def _check_sink_flags(opts: dict, network_sinks: bool) -> None:
    """Refuse now what the output worker would refuse later: a spool directory others
    can change, unreadable or public header files, a CA file that does not load."""
    parse_size(opts["spool_max"], "--spool-max")
    if not network_sinks:
        return
    from busted.senders import load_headers, tls_context
    from busted.spool import check_base, default_dir

    check_base(Path(opts["spool_dir"]).absolute() if opts["spool_dir"] else default_dir())
    load_headers(tuple(opts["output_header"]))  # values are checked, never kept here
    if opts["output_ca"]:
        tls_context(opts["output_ca"])
    if any(spec.startswith("otlp:") for spec in opts["output"]):
        try:
            import opentelemetry.proto.logs.v1.logs_pb2  # noqa: F401
        except ImportError as exc:
            raise UsageError("--output otlp: needs the opentelemetry-proto package.",
                             "pip install opentelemetry-proto") from exc


@click.command(
    epilog="""\b
Examples:
  sudo busted monitor
  sudo busted monitor --format json > events.jsonl
  sudo busted monitor --policy-dir ./policies/
  sudo busted monitor --rule 'package busted
    default decision = "allow"
    decision = "deny" { input.pii_detected == true }'
  busted monitor --source synthetic --rate 200 --runtime-dir /tmp/bx
  busted monitor --source replay:events.jsonl --runtime-dir /tmp/bx --format json
""",
)
@click.option("--source", default="bpf", show_default=True, metavar="bpf|synthetic|replay:FILE",
              help="Where events come from: the kernel probes, generated traffic, or a "
                   "recording (JSON lines).")
@click.option("--rate", type=float, default=50.0, show_default=True,
              help="Synthetic/replay source: events per second (0 = as fast as possible).")
@click.option("--count", type=click.IntRange(min=0), default=0,
              help="Synthetic source: stop producing after this many events.")
@click.option("--exit-when-done", is_flag=True,
              help="Stop once a finite source has no more events (always on for replay).")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=str(DEFAULT_RUNTIME_DIR),
              show_default=True, help="Sockets and lock live here.")
@click.option("--format", "format_", type=click.Choice(["text", "json", "none"]), default="text",
              show_default=True, help="How events are printed on stdout (none: publish only).")
@click.option("--verbose", "-v", is_flag=True,
              help="Text format: also show connections, DNS and system prompts.")
@click.option("--output", multiple=True, metavar="SINK",
              help="Extra sink (repeatable): file:PATH (JSON lines), syslog:HOST:PORT (UDP, "
                   "RFC 5424), syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT (RFC 5425), "
                   "webhook:URL (POSTed JSON arrays), otlp:URL (OTLP/HTTP logs). Network "
                   "sinks spool to disk and deliver at least once.")
@click.option("--spool-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where network sinks spool undelivered events, one 0700 directory each "
                   "[default: /var/lib/busted/spool as root].")
@click.option("--spool-max", default="1G", show_default=True, metavar="SIZE",
              help="Disk space per sink's spool; beyond it the oldest events are dropped "
                   "(counted and logged).")
@click.option("--output-header", multiple=True, metavar="file:PATH|env:VAR",
              help="HTTP headers for webhook and OTLP sinks ('Name: value' lines), from a "
                   "private file or an environment variable; never on the command line.")
@click.option("--output-ca", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="Trust this CA (PEM) instead of the system's for https and syslog+tls.")
@click.option("--output-gzip", is_flag=True, help="gzip webhook and OTLP request bodies.")
@click.option("--otlp-content", is_flag=True,
              help="Put prompts and answers in OTLP records (gen_ai.input.messages, ...); "
                   "left out by default, as the GenAI conventions ask.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True),
              help="Resolve pods with this kubeconfig (in a cluster: automatic).")
@click.option("--node-name", metavar="NAME",
              help="This node's name in the cluster (default: $NODE_NAME, else the host name).")
@click.option("--no-kubernetes", is_flag=True, help="Do not resolve pods even in a cluster.")
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus metrics there (e.g. 127.0.0.1:9477).")
@click.option("--policy-dir", multiple=True, type=click.Path(), metavar="DIR",
              help="Evaluate every *.rego here (repeatable); edits reload live.")
@click.option("--rule", multiple=True, metavar="REGO", help="An inline Rego policy (repeatable).")
@click.option("--policy-error", type=click.Choice(["allow", "deny"]), default="allow",
              show_default=True, help="Decision when a policy fails to evaluate.")
@click.option("--policy-scope", type=click.Choice(["all", "llm"]), default="all",
              show_default=True, help="Evaluate every event, or only LLM/MCP ones.")
@click.option("--insecure-policy-perms", is_flag=True,
              help="As root: accept policy files and directories that users other than "
                   "root may change (refused by default).")
@click.option("--enforce", is_flag=True, help="Act on deny decisions in the kernel (root).")
@click.option("--dry-run", is_flag=True, help="With --enforce: report what would be blocked.")
@click.option("--fail-closed", is_flag=True,
              help="With --enforce: kill a held writer whose verdict is late.")
@click.option("--hold-deadline-ms", type=click.IntRange(1, 10_000), default=250,
              show_default=True, help="With --enforce: longest hold of a write awaiting its verdict.")
@click.option("--max-copy", type=int, default=DEFAULT_MAX_COPY, show_default=True,
              help="Bytes copied per call on connections that carry requests (POST, "
                   f"HTTP/2, WebSocket): whole requests (up to {MAX_COPY_LIMIT}).")
@click.option("--peek-copy", type=int, default=DEFAULT_PEEK_COPY, show_default=True,
              help="Bytes copied per call on other connections: enough to classify them "
                   f"(up to {PEEK_COPY_LIMIT}).")
@click.option("--plaintext-port", type=click.IntRange(1, 65535), multiple=True, metavar="PORT",
              help="Plain-text model-server port to capture (repeatable; default 11434).")
@click.option("--kprobes", is_flag=True, help="Use kprobes where the kernel has them.")
@click.option("--pid", "pids", type=click.IntRange(min=1), multiple=True, metavar="PID",
              help="Capture TLS of these processes only (repeatable): nobody else pays "
                   "for the probes.")
@click.option("--dump-bpf", is_flag=True, help="Print the generated BPF C and cflags, then exit.")
@click.option("--no-drop-privileges", is_flag=True,
              help="Keep parsing workers as root (debugging only).")
@click.option("--heartbeat-timeout", type=click.FloatRange(0.5, 600), default=5.0,
              show_default=True, help="Restart a worker silent for this many seconds.")
def monitor(**opts) -> int:
    """Run the daemon: capture, classify, identity, policy, output.

    Events are printed on stdout and published on <runtime-dir>/events.sock for
    `busted ui`. Logs go to stderr. Stop with Ctrl-C, SIGTERM or `sudo busted stop`.
    """
    opts["format"] = opts.pop("format_")
    config = _config_from_flags(**opts)
    if opts["dump_bpf"]:
        from busted.sources.kernel import dump_bpf

        click.echo(dump_bpf(config))
        return 0
    if config.enforce and os.geteuid() != 0:
        raise PrivilegeError(
            "--enforce needs root: it stops, resumes and kills other users' processes and "
            "attaches connect filters to the cgroup hierarchy.",
            "Run `sudo busted monitor --enforce ...`, or without --enforce to only report decisions.",
        )
    if config.source == "bpf" and os.geteuid() != 0:
        raise PrivilegeError(
            "capturing from the kernel needs root: busted loads eBPF programs.",
            "Run `sudo busted monitor`, or try it without root using "
            "`busted monitor --source synthetic --runtime-dir /tmp/bx`.",
        )

    from busted.supervisor import Supervisor

    supervisor = Supervisor(config)
    if opts["metrics"]:  # before the workers start, so a busy port fails cleanly
        from busted.metrics import serve

        serve(opts["metrics"], supervisor.stats)
    supervisor.start()
    log.info("monitor started (pid %d, runtime dir %s, source %s)", os.getpid(),
             config.runtime_dir, config.source)
    status = supervisor.run()
    final = supervisor.status()
    # Imported only now: rich is 1.4 MB the supervisor would hold all its life for this.
    from busted.report import print_summary

    print_summary(final)
    if os.environ.get("BUSTED_SUMMARY_JSON"):
        # Machine-readable summary for benchmarks and tests (written as root: no symlinks).
        write_private(os.environ["BUSTED_SUMMARY_JSON"], json.dumps(final).encode(),
                      "the summary file")
    if supervisor.fatal_error:
        click.echo(f"busted: {supervisor.fatal_error}", err=True)
    sys.stdout.flush()
    return status
