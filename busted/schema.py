"""The event schema and its wire encoding — the one place both are defined.

Every hop of the pipeline (capture -> classify -> identity -> policy -> output) and the
published stream (``events.sock``) carries *batches* of events. An event is a flat
``dict`` whose keys are the field names below (the ``ProcessedEvent``); on the wire a
batch is the msgpack encoding of ``[SCHEMA_VERSION, [event, event, ...]]``.

Why plain dicts and not objects: a stage that only adds a field should not pay for
building and tearing down an object per event (measured ~1-2 µs each, against a budget
of ~20 µs of CPU per event for the whole pipeline on two cores). ``ProcessedEvent`` is a
``TypedDict`` so the shape is still typed and documented.

Events are sparse: producers set only the fields they know and stages add what they
learn, so a batch carries no wall of defaults (``None`` also reads as "unknown").
Decoding is tolerant: unknown
fields are kept as they are (a newer producer may add some) and missing fields read as
their defaults through :func:`complete` (an older producer may lack them).
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

import msgpack
import ormsgpack

SCHEMA_VERSION = 1

# Event types emitted by capture (and by enforcement).
EVENT_TYPES = (
    "TCP_CONNECT",  # an outgoing connection was attempted
    "TCP_ESTABLISHED",  # ... and completed
    "TCP_CLOSE",  # a connection closed (bytes carry the totals)
    "DNS_QUERY",  # a DNS question left the host (dns_name)
    "DNS_ANSWER",  # a DNS answer came back (dns_name, dns_addrs)
    "TLS_DATA_WRITE",  # plaintext handed to the TLS library by the local process
    "TLS_DATA_READ",  # plaintext returned by the TLS library to the local process
    "DATA_WRITE",  # plain-text socket payload sent (local model servers)
    "DATA_READ",  # plain-text socket payload received
    "ENFORCEMENT",  # an action taken (or that would be taken) on a deny
    "BLIND_SPOT",  # TLS to an LLM host (or of an agent) whose plaintext is not seen
    "TCP_EXCHANGE",  # a request/response exchange of a connection ended (exchange, ml_*)
)

CONTENT_CLASSES = (
    "LLM_REQUEST",
    "LLM_RESPONSE",
    "MCP_REQUEST",
    "MCP_RESPONSE",
    "HTTP_REQUEST",
    "HTTP_RESPONSE",
    "UNKNOWN",
)

DECISIONS = ("allow", "audit", "deny")

# Fields of a judged event that a kill verdict carries to capture and its ENFORCEMENT
# event repeats (what was stopped, and why).
ENFORCEMENT_CONTEXT = (
    "process_name", "uid", "conn_id", "sni", "dst_ip", "dst_port", "llm_provider",
    "llm_model", "content_class", "policy_reasons", "identity_id", "container_id",
    "pod_name", "pod_namespace", "pod_workload",
)


class ProcessedEvent(TypedDict, total=False):
    """One observed event, as outputs print it and as policies see it (``input``)."""

    # --- identity of the record -------------------------------------------------
    seq: int  # per-capture-run sequence number: lets consumers count gaps
    event_id: str  # run id + seq, set by the output worker: receivers de-duplicate on it
    event_type: str  # one of EVENT_TYPES
    timestamp: float  # seconds since the epoch (outputs format it)
    direction: str  # "write" (sent by the local process) or "read"
    # --- process ------------------------------------------------------------------
    pid: int
    tid: int
    uid: int
    gid: int
    process_name: str  # the process's name (/proc/PID/comm of its main thread)
    thread_name: str  # the calling thread's name, when it differs (tokio-rt-worker...)
    cgroup_id: int
    exe: str  # the process's executable (BLIND_SPOT)
    container_id: str
    pod_name: str
    pod_namespace: str
    pod_workload: str  # the Deployment / StatefulSet / DaemonSet / Job the pod belongs to
    pod_service_account: str
    # --- connection ---------------------------------------------------------------
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    bytes: int  # payload bytes of this event (or connection totals on close)
    sni: str
    provider: str  # provider named by destination alone (SNI / DNS / IP)
    dns_name: str
    dns_addrs: list[str]
    tls_alpn: str  # protocols the ClientHello offered, comma-separated (BLIND_SPOT)
    # --- blind spots (busted.kernel.blindspots) -------------------------------------
    tls_library: str  # the TLS library the connection appears to use
    blind_reason: str  # why its plaintext is not seen
    blind_advice: str  # what the user can do about it
    # --- behaviour (busted.ml) ------------------------------------------------------
    exchange: dict[str, Any]  # TCP_EXCHANGE: the exchange's statistics (busted.kernel.tracker)
    plaintext_conn_id: int  # conn_id of the connection's payload events, when any was seen
    ml_class: str  # the behavioural model's class (busted.ml.model.CLASSES), "" = none
    ml_confidence: float  # its probability
    ml_note: str  # e.g. "behaves like an LLM stream (0.94)"
    # --- classification -----------------------------------------------------------
    content_class: str  # one of CONTENT_CLASSES
    llm_provider: str
    llm_endpoint: str
    llm_model: str
    llm_stream: bool
    llm_system_prompt: str
    llm_user_message: str
    llm_response_preview: str
    llm_input_tokens: int
    llm_output_tokens: int
    agent_sdk: str
    agent_sdk_version: str
    classifier_confidence: float
    http_headers: dict[str, str]  # request/response headers, secrets masked
    mcp_method: str
    mcp_tool: str
    pii_detected: bool
    pii_types: list[str]
    # --- identity -----------------------------------------------------------------
    identity_id: int
    identity_instance: str
    identity_confidence: float
    identity_narrative: str
    # --- policy and enforcement ---------------------------------------------------
    policy: str  # one of DECISIONS; "" when not evaluated
    policy_reasons: list[str]
    policy_error: str
    action: str  # enforcement action taken: "killed", "blocked", "would-kill", ...
    held: bool  # the writer is stopped until this event's verdict (--enforce)
    hold_id: int  # names the hold in the verdict sent back to capture
    hold_ms: float  # how long a held write waited for its verdict
    # --- payload ------------------------------------------------------------------
    conn_id: int  # capture's id of the connection (stable for its lifetime, per pid)
    payload: bytes  # raw bytes of one capture (capture -> classify only; classify drops it)
    truncated: bool  # the kernel copied less than the call carried
    tls_payload: str  # captured plaintext as text (UTF-8, invalid bytes replaced)
    provisional: bool  # a held piece of a request judged before the request ended


# Every field with the value it reads as when absent. Order is the display order.
FIELD_DEFAULTS: dict[str, Any] = {
    "seq": 0,
    "event_id": "",
    "event_type": "",
    "timestamp": 0.0,
    "direction": "",
    "pid": 0,
    "tid": 0,
    "uid": 0,
    "gid": 0,
    "process_name": "",
    "thread_name": "",
    "cgroup_id": 0,
    "exe": "",
    "container_id": "",
    "pod_name": "",
    "pod_namespace": "",
    "pod_workload": "",
    "pod_service_account": "",
    "src_ip": "",
    "src_port": 0,
    "dst_ip": "",
    "dst_port": 0,
    "bytes": 0,
    "sni": "",
    "provider": "",
    "dns_name": "",
    "dns_addrs": [],
    "tls_alpn": "",
    "tls_library": "",
    "blind_reason": "",
    "blind_advice": "",
    "exchange": {},
    "plaintext_conn_id": 0,
    "ml_class": "",
    "ml_confidence": 0.0,
    "ml_note": "",
    "content_class": "",
    "llm_provider": "",
    "llm_endpoint": "",
    "llm_model": "",
    "llm_stream": False,
    "llm_system_prompt": "",
    "llm_user_message": "",
    "llm_response_preview": "",
    "llm_input_tokens": 0,
    "llm_output_tokens": 0,
    "agent_sdk": "",
    "agent_sdk_version": "",
    "classifier_confidence": 0.0,
    "http_headers": {},
    "mcp_method": "",
    "mcp_tool": "",
    "pii_detected": False,
    "pii_types": [],
    "identity_id": 0,
    "identity_instance": "",
    "identity_confidence": 0.0,
    "identity_narrative": "",
    "policy": "",
    "policy_reasons": [],
    "policy_error": "",
    "action": "",
    "held": False,
    "hold_id": 0,
    "hold_ms": 0.0,
    "conn_id": 0,
    "payload": b"",
    "truncated": False,
    "tls_payload": "",
    "provisional": False,
}

FIELDS: tuple[str, ...] = tuple(FIELD_DEFAULTS)
_MUTABLE_DEFAULTS = frozenset(k for k, v in FIELD_DEFAULTS.items() if isinstance(v, (list, dict)))


class DecodeError(ValueError):
    """A message on the wire could not be read as a batch of events."""


def new_event(**fields: Any) -> ProcessedEvent:
    """Build an event; ``timestamp`` defaults to now. Unknown names are rejected,
    because a producer in this code base that misspells a field is a bug."""
    unknown = set(fields) - FIELD_DEFAULTS.keys()
    if unknown:
        raise TypeError(f"unknown event field(s): {', '.join(sorted(unknown))}")
    fields.setdefault("timestamp", time.time())
    return fields  # type: ignore[return-value]


def complete(event: dict[str, Any]) -> dict[str, Any]:
    """Return a new dict with every schema field present (defaults filled in).

    Unknown fields from a newer producer are kept.
    """
    full = dict(FIELD_DEFAULTS)
    for name in _MUTABLE_DEFAULTS:
        full[name] = FIELD_DEFAULTS[name].copy()
    full.update((k, v) for k, v in event.items() if v is not None or k not in full)
    return full


def encode_batch(events: list[dict[str, Any]]) -> bytes:
    """Encode a batch of events for one ZeroMQ frame.

    ormsgpack writes the same msgpack as the msgpack package at about half the cost,
    which matters here: every stage that changes events re-encodes every batch.
    """
    try:
        return ormsgpack.packb([SCHEMA_VERSION, events])
    except TypeError:
        # A value ormsgpack refuses (an int beyond 64 bits, a set, ...): the slower,
        # more lenient encoder still gets the batch across or raises a clear error.
        return msgpack.packb([SCHEMA_VERSION, events], use_bin_type=True)


def decode_batch(frame: bytes) -> list[dict[str, Any]]:
    """Decode one frame into its events (sparse: absent fields are defaults).

    Raises :class:`DecodeError` for anything that is not a batch; a batch from a newer
    schema version is accepted as long as its shape is the same.
    """
    try:
        message = ormsgpack.unpackb(frame)
    except ormsgpack.MsgpackDecodeError:
        try:  # maps with non-string keys are valid msgpack that ormsgpack refuses
            message = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeError(f"not msgpack: {exc}") from exc
    if (
        not isinstance(message, list)
        or len(message) != 2
        or not isinstance(message[0], int)
        or not isinstance(message[1], list)
    ):
        raise DecodeError("not a [version, events] batch")
    events = message[1]
    if not all(isinstance(e, dict) for e in events):
        raise DecodeError("batch holds a non-map event")
    return events


def batch_length(frame: bytes) -> int:
    """Number of events in an encoded batch, read from the msgpack headers alone.

    Pass-through stages use it to keep their counters without decoding the batch.
    Raises :class:`DecodeError` when the frame does not start like a batch.
    """
    # [version, [events...]]: fixarray(2), a positive fixint version, then the events
    # array header: fixarray (0x90-0x9f), array16 (0xdc) or array32 (0xdd).
    if len(frame) < 3 or frame[0] != 0x92 or frame[1] > 0x7F:
        raise DecodeError("not a [version, events] batch")
    head = frame[2]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(frame) >= 5:
        return int.from_bytes(frame[3:5], "big")
    if head == 0xDD and len(frame) >= 7:
        return int.from_bytes(frame[3:7], "big")
    raise DecodeError("not a [version, events] batch")
