"""The output worker: prints events (text or JSON lines on stdout), writes extra sinks,
and publishes every event on ``events.sock`` for the dashboard and other subscribers.

Sockets: PULL bound at ``pipe/output.sock``; PUB bound at ``events.sock`` (0660,
group ``busted``) carrying ``[b"events", batch]`` and, about once a second,
``[b"stats", counters]`` relayed from the supervisor. Runs as root (it may write to
root-owned sinks); it parses nothing untrusted beyond our own batches.

It also counts ``seq`` gaps: events that capture numbered but that never arrived here
(dropped on a hop, or lost in a worker that crashed), so every produced event is
accounted for; and it names each event it writes out (``event_id``: this run's id, from
the boot id and start time, and the event's ``seq``), so receivers of the at-least-once
sinks can drop what a retry delivers twice.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from busted.config import MonitorConfig
from busted.sinks import CLOSE_DRAIN_S, Sink, SinkOptions, SpooledSink, open_sink
from busted.workers.stage import Event, Stage

log = logging.getLogger("busted.output")

_TEXT_PREVIEW = 160  # characters of a prompt shown in text mode
# Classes shown by the text format without --verbose; JSON shows everything.
_TEXT_CLASSES = ("LLM_REQUEST", "LLM_RESPONSE", "MCP_REQUEST", "MCP_RESPONSE")


# Sink figures that add up over the output worker's restarts (the others are gauges).
SINK_COUNTERS = ("sent", "retried", "errors", "dropped", "disk_errors", "rejected")


def new_run_id() -> str:
    """Names one monitor run in every ``event_id``: the kernel's boot id (12 hex digits)
    and the start time in milliseconds (hex), so ids do not repeat across runs."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().replace("-", "").strip()[:12]
    except OSError:
        boot = os.urandom(6).hex()
    return f"{boot}-{time.time_ns() // 1_000_000:x}"


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    raise TypeError(type(value).__name__)


_iso_cache: list = [None, ""]  # [whole second, its "YYYY-MM-DDTHH:MM:SS" prefix]


def iso_time(ts: float) -> str:
    """UTC, millisecond precision: sortable and unambiguous in a SIEM."""
    whole = int(ts)
    if _iso_cache[0] != whole:  # strftime costs ~1.5 µs; events mostly share a second
        _iso_cache[0] = whole
        _iso_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_iso_cache[1]}.{int((ts - whole) * 1000):03d}Z"


def to_json_line(event: Event) -> bytes:
    """One JSON object per line; raw payload bytes are never printed.

    Changes the event in place (timestamp formatted, payload removed): the output
    stage is the last to read it, and copying costs as much as encoding.
    """
    event.pop("payload", None)
    ts = event.get("timestamp")
    if isinstance(ts, (int, float)):
        event["timestamp"] = iso_time(ts)
    return orjson.dumps(event, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)


def _one_line(text: str, limit: int = _TEXT_PREVIEW) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB"


def to_text(event: Event, verbose: bool = False) -> str | None:
    """The human format (like the seed README's), or None when not shown."""
    cls = event.get("content_class") or ""
    decision = event.get("policy") or ""
    etype = event.get("event_type") or ""
    if not verbose and cls not in _TEXT_CLASSES and decision not in ("audit", "deny") \
            and etype not in ("ENFORCEMENT", "BLIND_SPOT"):
        return None
    ts = event.get("timestamp")
    clock = time.strftime("%H:%M:%S", time.localtime(ts if isinstance(ts, (int, float)) else None))
    who = f"{event.get('process_name') or '?'} ({event.get('pid', 0)})"
    if etype == "BLIND_SPOT":
        return _blind_text(event, clock, who)
    arrow = "<<<" if event.get("direction") == "read" else ">>>"
    if cls.startswith(("LLM_", "MCP_")):
        provider = event.get("llm_provider") or event.get("provider") or ""
        what = event.get("llm_endpoint", "").rsplit("/v1/", 1)[-1].lstrip("/")
        if cls.startswith("MCP_"):
            what = "mcp " + " ".join(x for x in (event.get("mcp_method"), event.get("mcp_tool")) if x)
            provider = event.get("sni") or event.get("dst_ip") or ""
        head = " ".join(x for x in (clock, who, arrow, provider, event.get("llm_model"), what) if x)
        tags = []
        if event.get("agent_sdk"):
            tags.append(f"sdk:{event['agent_sdk']}")
        if event.get("llm_stream"):
            tags.append("stream")
        if event.get("pii_detected"):
            tags.append("PII!")
        if decision and decision != "allow":
            tags.append(f"policy:{decision}")
        if event.get("action"):
            tags.append(f"action:{event['action']}")
        if tags:
            head += f" [{' | '.join(tags)}]"
        if event.get("direction") == "read":
            head += f" ({_size(event.get('bytes') or 0)})"
        lines = [head]
        if event.get("llm_user_message"):
            lines.append(f"  user: {_one_line(event['llm_user_message'])}")
        if event.get("llm_system_prompt") and verbose:
            lines.append(f"  system: {_one_line(event['llm_system_prompt'])}")
        if event.get("policy_reasons"):
            lines.append(f"  reasons: {'; '.join(event['policy_reasons'])}")
        return "\n".join(lines)
    dst = f"{event.get('dst_ip', '')}:{event.get('dst_port', 0)}"
    host = event.get("sni") or event.get("dns_name") or ""
    detail = {
        "DNS_QUERY": f"dns? {event.get('dns_name', '')}",
        "DNS_ANSWER": f"dns {event.get('dns_name', '')} = {', '.join(event.get('dns_addrs') or [])}",
    }.get(etype, f"{etype.lower()} {dst}" + (f" ({host})" if host else ""))
    if cls:
        detail += f" {cls.lower()}"
    if decision and decision != "allow":
        detail += f" [policy:{decision}]"
    return f"{clock} {who} {detail}"


def _blind_text(event: Event, clock: str, who: str) -> str:
    """BLIND: a connection busted sees go out but cannot read, why, and what to do."""
    where = event.get("sni") or event.get("dns_name") or \
        f"{event.get('dst_ip', '')}:{event.get('dst_port', 0)}"
    library = event.get("tls_library") or "unknown TLS library"
    lines = [f"{clock} {who} BLIND {where} [{library}] {event.get('exe') or ''}".rstrip(),
             f"  why: {event.get('blind_reason', '')}"]
    if event.get("ml_note"):  # the behavioural model's verdict (busted.ml.verdicts)
        lines.append(f"  behaviour: {event['ml_note']}")
    if event.get("blind_advice"):
        lines.append(f"  do: {event['blind_advice']}")
    return "\n".join(lines)


class OutputStage(Stage):
    role = "output"
    read_only = True  # the loop publishes the frame as received

    def __init__(self, config: MonitorConfig, stream: BinaryIO | None = None) -> None:
        super().__init__(config)
        self.stream = stream
        self.expected_seq: int | None = None
        self.stdout_ok = True
        self.sinks: list[Sink] = []
        self.run_id = config.run_id or new_run_id()
        self._seq_seen: dict[int, int] = {}  # recent seqs: several events may share one
        self._unnumbered = 0

    def setup(self) -> None:
        if self.stream is None:
            self.stream = os.fdopen(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)
        options = SinkOptions.from_config(self.config)
        self.sinks = [open_sink(spec, options) for spec in self.config.outputs]

    def process(self, events: list[Event]) -> list[Event]:
        self._count_gaps(events)
        fmt = self.config.format if self.stdout_ok else "none"
        data = b""
        if fmt == "text":  # before JSON, which formats timestamps in place
            lines = [t for t in (to_text(e, self.config.verbose) for e in events) if t]
            data = ("\n".join(lines) + "\n").encode() if lines else b""
        if fmt == "json" or self.sinks:
            self._name_events(events)
            json_lines = [to_json_line(e) for e in events]
            for sink in self.sinks:
                sink.write(json_lines)
            if fmt == "json":
                data = b"".join(json_lines)
        if data:
            try:
                self.stream.write(data)
                self.stream.flush()
            except BrokenPipeError:
                # Someone piped us into `head`; keep publishing, stop printing.
                self.stdout_ok = False
                log.warning("stdout closed; events are still published on events.sock")
        return events

    def _name_events(self, events: list[Event]) -> None:
        """``event_id`` = run id + seq; a message classify emitted with the seq of the
        capture that completed it may share that seq: the second gets ``.1``, and so on."""
        run, seen = self.run_id, self._seq_seen
        for event in events:
            seq = event.get("seq")
            if not isinstance(seq, int):
                self._unnumbered += 1
                event["event_id"] = f"{run}-u{os.getpid()}.{self._unnumbered}"
                continue
            n = seen.get(seq, 0)
            seen[seq] = n + 1
            event["event_id"] = f"{run}-{seq}.{n}" if n else f"{run}-{seq}"
        if len(seen) > 8192:  # keep the newest half (dicts keep insertion order)
            for seq in list(seen)[:4096]:
                del seen[seq]

    def _count_gaps(self, events: list[Event]) -> None:
        """Count seq numbers that never arrived. An event may also arrive late (classify
        emits a message with the seq of the capture that completed it, or flushes one
        that went idle); it then stops being missing."""
        expected = self.expected_seq
        stats = self.stats
        for event in events:
            seq = event.get("seq")
            if not isinstance(seq, int):
                continue
            if expected is None or seq >= expected:
                if expected is not None and seq > expected:
                    stats["missing"] += seq - expected
                expected = seq + 1
            elif stats["missing"] > 0:
                stats["missing"] -= 1
        self.expected_seq = expected

    def tick(self, now: float) -> list[Event]:
        """Sink health for status: counters as ``sink:LABEL:KEY`` (summed over restarts),
        state, last error and spool gauges under ``sinks``."""
        if not self.sinks:
            return []
        info = {}
        for sink in self.sinks:
            health = sink.health()
            for key in SINK_COUNTERS:
                if key in health:
                    self.stats[f"sink:{sink.label}:{key}"] = int(health[key])
            info[sink.label] = {k: v for k, v in health.items() if k not in SINK_COUNTERS}
        self.stats["sinks"] = info
        return []

    def close(self) -> list[Event]:
        """Network sinks deliver what they can in CLOSE_DRAIN_S (all at once); the
        rest stays in their spools for the next monitor."""
        deadline = time.monotonic() + CLOSE_DRAIN_S
        for sink in self.sinks:
            sink.close(deadline)
        for sink in self.sinks:
            if isinstance(sink, SpooledSink):
                sink.join()
        self.tick(time.monotonic())
        return []


STAGE = OutputStage
