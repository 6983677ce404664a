"""The dashboard's data model: the last N events, the current filter, and aggregates.

Pure Python, no Dear PyGui and no sockets, so it is unit-tested without a display. The
render loop feeds it with :meth:`EventStore.add` (a few microseconds per event) and reads
slices of the filtered view for the rows that are on screen; nothing here is
proportional to the number of stored events except changing the filter.

Each stored event gets a local id (``uid``), increasing by one per event, so a row or a
selection can refer to an event that may have been evicted in the meantime.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

Event = dict[str, Any]

DEFAULT_MAX_EVENTS = 5_000
RATE_HISTORY_S = 300  # the header plot shows the last five minutes
ACTIVE_WINDOW_S = 60.0  # a process counts as active if it was seen this recently
MAX_GROUPS = 2_000  # processes/identities tracked; the least recently seen go first

ANY = ""  # a filter field set to this matches everything

# Fields searched by the free-text filter (besides the filter's own fields).
_SEARCH_FIELDS = (
    "process_name",
    "llm_provider",
    "provider",
    "llm_model",
    "llm_endpoint",
    "agent_sdk",
    "content_class",
    "policy",
    "sni",
    "dst_ip",
    "identity_instance",
    "identity_narrative",
    "container_id",
    "pod_name",
    "mcp_method",
    "mcp_tool",
    "tls_library",
    "blind_reason",
    "llm_system_prompt",
    "llm_user_message",
    "llm_response_preview",
)


def provider_of(event: Event) -> str:
    """The provider an event is about: the classifier's, else the destination's."""
    return (event.get("llm_provider") or event.get("provider")
            or ("MCP" if (event.get("content_class") or "").startswith("MCP_") else ""))


def process_key(event: Event) -> str:
    """How the processes view groups events: name and pid."""
    return f"{event.get('process_name') or '?'} ({event.get('pid') or 0})"


def identity_key(event: Event) -> str:
    """How the agents view groups events: the identity worker's instance name."""
    return event.get("identity_instance") or process_key(event)


def timestamp_of(event: Event) -> float:
    """Seconds since the epoch; the stream carries floats, but a JSON replay may carry
    the output's ISO form ("2026-11-25T21:50:43.422Z")."""
    ts = event.get("timestamp")
    if isinstance(ts, (int, float)):
        return float(ts)
    if isinstance(ts, str) and ts:
        try:
            return datetime.fromisoformat(ts).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def decision_of(event: Event) -> str:
    return event.get("policy") or ""


def is_request(event: Event) -> bool:
    return event.get("content_class") in ("LLM_REQUEST", "MCP_REQUEST")


def _search_text(event: Event) -> str:
    parts = [str(event.get(name) or "") for name in _SEARCH_FIELDS]
    parts.append(str(event.get("pid") or ""))
    if event.get("pii_types"):
        parts.extend(event["pii_types"])
    return "\n".join(parts).lower()


@dataclass(frozen=True)
class Filter:
    """What the events table shows. Empty fields match everything."""

    text: str = ""
    provider: str = ANY
    content_class: str = ANY
    decision: str = ANY
    process: str = ANY  # a process_name (all its pids, unless pid is set too)
    pid: int = 0
    pii_only: bool = False

    @property
    def active(self) -> bool:
        return bool(
            self.text or self.provider or self.content_class or self.decision or self.process
            or self.pid or self.pii_only
        )

    def with_(self, **changes: Any) -> Filter:
        return replace(self, **changes)

    def matches(self, event: Event, search_text: str | None = None) -> bool:
        if self.pii_only and not event.get("pii_detected"):
            return False
        if self.provider and provider_of(event) != self.provider:
            return False
        if self.content_class and (event.get("content_class") or "") != self.content_class:
            return False
        if self.decision and decision_of(event) != self.decision:
            return False
        if self.process and (event.get("process_name") or "") != self.process:
            return False
        if self.pid and event.get("pid") != self.pid:
            return False
        if self.text:
            haystack = search_text if search_text is not None else _search_text(event)
            # Every word must appear somewhere: "openai deny" narrows like a search box.
            return all(word in haystack for word in self.text.lower().split())
        return True


@dataclass
class ProviderStats:
    events: int = 0
    requests: int = 0
    responses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    bytes: int = 0
    pii: int = 0
    last_seen: float = 0.0
    models: Counter[str] = field(default_factory=Counter)
    processes: set[str] = field(default_factory=set)
    decisions: Counter[str] = field(default_factory=Counter)


@dataclass
class GroupStats:
    """Per process (name + pid) or per identity."""

    key: str
    process_name: str = ""
    pid: int = 0
    events: int = 0
    requests: int = 0
    bytes: int = 0
    pii: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    container: str = ""
    sdks: set[str] = field(default_factory=set)
    providers: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    narrative: str = ""
    seen_via: str = ""  # how its plaintext was read ("" = none yet); see visibility()
    blind: Event | None = None  # its last BLIND_SPOT event


class RateHistory:
    """Events per second for the last few minutes, one bucket per wall-clock second."""

    def __init__(self, seconds: int = RATE_HISTORY_S) -> None:
        self.seconds = seconds
        self._buckets: OrderedDict[int, int] = OrderedDict()

    def add(self, count: int, when: float, now: float | None = None) -> None:
        """Count ``count`` events at time ``when`` (clamped to the window ending ``now``:
        a producer's clock may be a little ahead, and old history must not evict)."""
        now = when if now is None else now
        second = min(int(when), int(now))
        if second <= int(now) - self.seconds:
            return
        if second in self._buckets:
            self._buckets[second] += count
        elif not self._buckets or second > next(reversed(self._buckets)):
            self._buckets[second] = count
        else:
            # A delayed event for a second with no bucket yet: keep the buckets sorted.
            self._buckets[second] = count
            self._buckets = OrderedDict(sorted(self._buckets.items()))
        while self._buckets and next(iter(self._buckets)) <= int(now) - self.seconds:
            self._buckets.popitem(last=False)

    def series(self, now: float) -> tuple[list[float], list[float]]:
        """x (seconds relative to now, negative) and y (events/s), zero-filled."""
        end = int(now)
        xs = [float(s - end) for s in range(end - self.seconds + 1, end + 1)]
        ys = [float(self._buckets.get(s, 0)) for s in range(end - self.seconds + 1, end + 1)]
        return xs, ys

    def rate(self, now: float, window_s: int = 3) -> float:
        """Mean rate over the last complete ``window_s`` seconds."""
        end = int(now)
        total = sum(self._buckets.get(s, 0) for s in range(end - window_s, end))
        return total / window_s


class EventStore:
    """The last ``max_events`` events, the filtered view over them, and running totals.

    Totals and per-provider / per-process aggregates cover everything seen since the
    dashboard started (they do not shrink when old events are evicted).
    """

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS, clock=time.time) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._clock = clock
        # A list trimmed in halves is a ring buffer with O(1) random access by uid.
        self._events: list[Event] = []
        self._search: list[str | None] = []
        self._first_uid = 0  # uid of self._events[0]
        self._next_uid = 0
        self.filter = Filter()
        self._view: list[int] = []  # uids matching the filter, ascending
        self.version = 0  # bumped whenever the filtered view changes

        self.total = 0
        self.decisions: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self.pii_total = 0
        self.bytes_total = 0
        self.providers: dict[str, ProviderStats] = {}
        self.processes: OrderedDict[str, GroupStats] = OrderedDict()
        self.identities: OrderedDict[str, GroupStats] = OrderedDict()
        self.process_names: Counter[str] = Counter()
        self.blind: dict[int, Event] = {}  # pid -> its last BLIND_SPOT event
        self.rate = RateHistory()

    # --- feeding -------------------------------------------------------------------
    def add(self, event: Event) -> int:
        """Store one event and fold it into the aggregates; returns its uid."""
        self.add_many((event,))
        return self._next_uid - 1

    def add_many(self, events: Iterable[Event]) -> int:
        """Store events (oldest first). The render loop calls this with everything the
        stream delivered since the last frame: ~5 µs an event, so it is kept tight."""
        count = 0
        now = self._clock()
        flt = self.filter
        active = flt.active
        store = self._events.append
        search = self._search.append
        view = self._view.append
        aggregate = self._aggregate
        rate_add = self.rate.add
        last_second, pending = None, 0
        for event in events:
            uid = self._next_uid
            self._next_uid = uid + 1
            store(event)
            if active:
                text = _search_text(event) if flt.text else None
                search(text)
                if flt.matches(event, text):
                    view(uid)
            else:
                search(None)
                view(uid)
            ts = event.get("timestamp")
            if not isinstance(ts, float):
                ts = timestamp_of(event) or now
            aggregate(event, ts)
            count += 1
            second = int(ts)
            if second != last_second:
                if pending:
                    rate_add(pending, last_second, now)
                last_second, pending = second, 0
            pending += 1
        if pending:
            rate_add(pending, last_second, now)
        if len(self._events) >= 2 * self.max_events:
            self._evict()
        if count:
            self.version += 1
        return count

    def _evict(self) -> None:
        drop = len(self._events) - self.max_events
        del self._events[:drop]
        del self._search[:drop]
        self._first_uid += drop
        cut = bisect.bisect_left(self._view, self._first_uid)
        if cut:
            del self._view[:cut]

    def _aggregate(self, event: Event, now: float) -> None:
        get = event.get
        size = get("bytes") or 0
        decision = get("policy") or ""
        pii = bool(get("pii_detected"))
        content_class = get("content_class") or ""
        request = content_class in ("LLM_REQUEST", "MCP_REQUEST")
        name = get("process_name") or ""
        pid = get("pid") or 0
        self.total += 1
        self.bytes_total += size
        if get("event_type") == "BLIND_SPOT":
            self.blind[pid] = event
        if decision:
            self.decisions[decision] += 1
        if pii:
            self.pii_total += 1
        if content_class:
            self.classes[content_class] += 1
        if name:
            self.process_names[name] += 1

        provider = provider_of(event)
        model = get("llm_model") or ""
        if provider:
            p = self.providers.get(provider)
            if p is None:
                p = self.providers[provider] = ProviderStats()
            p.events += 1
            if request:
                p.requests += 1
            elif content_class in ("LLM_RESPONSE", "MCP_RESPONSE"):
                p.responses += 1
            p.input_tokens += get("llm_input_tokens") or 0
            p.output_tokens += get("llm_output_tokens") or 0
            p.bytes += size
            p.pii += pii
            if now > p.last_seen:
                p.last_seen = now
            if model:
                p.models[model] += 1
            p.processes.add(name or "?")
            if decision:
                p.decisions[decision] += 1

        pkey = f"{name or '?'} ({pid})"
        ikey = get("identity_instance") or pkey
        sdk = get("agent_sdk")
        blind = get("event_type") == "BLIND_SPOT"
        seen_via = "" if blind else _seen_via(event)
        for groups, key in ((self.processes, pkey), (self.identities, ikey)):
            g = groups.get(key)
            if g is None:
                g = groups[key] = GroupStats(key=key, process_name=name, pid=pid, first_seen=now)
                if len(groups) > MAX_GROUPS:
                    groups.popitem(last=False)
            else:
                groups.move_to_end(key)
            g.events += 1
            g.requests += request
            g.bytes += size
            g.pii += pii
            if now > g.last_seen:
                g.last_seen = now
            if not g.container and get("container_id"):
                g.container = get("pod_name") or event["container_id"][:12]
            if sdk:
                g.sdks.add(sdk)
            if provider:
                g.providers[provider] += 1
            if model:
                g.models[model] += 1
            if decision:
                g.decisions[decision] += 1
            narrative = get("identity_narrative")
            if narrative:
                g.narrative = narrative
            if seen_via and g.seen_via in ("", "TLS"):
                g.seen_via = seen_via
            elif blind:
                g.blind = event

    # --- reading -------------------------------------------------------------------
    def __len__(self) -> int:
        return min(len(self._events), self.max_events)

    @property
    def stored(self) -> int:
        return len(self)

    def get(self, uid: int) -> Event | None:
        """The event with this uid, or None if it was evicted (or never existed)."""
        index = uid - self._first_uid
        if uid < self.oldest_uid or index >= len(self._events):
            return None
        return self._events[index]

    @property
    def oldest_uid(self) -> int:
        """The oldest uid still visible (the ring may hold up to 2N, we expose N)."""
        return max(self._first_uid, self._next_uid - self.max_events)

    def view(self) -> list[int]:
        """Uids matching the filter, oldest first (a live list: do not modify)."""
        oldest = self.oldest_uid
        if self._view and self._view[0] < oldest:
            cut = bisect.bisect_left(self._view, oldest)
            del self._view[:cut]
        return self._view

    def view_len(self) -> int:
        return len(self.view())

    def view_slice(self, start: int, stop: int) -> list[tuple[int, Event]]:
        """(uid, event) pairs for positions [start, stop) of the filtered view."""
        view = self.view()
        out = []
        for uid in view[max(0, start) : max(0, stop)]:
            event = self.get(uid)
            if event is not None:
                out.append((uid, event))
        return out

    def set_filter(self, new: Filter) -> None:
        """Apply a filter to everything stored (a few ms for 5,000 events)."""
        if new == self.filter:
            return
        self.filter = new
        oldest = self.oldest_uid
        view: list[int] = []
        for index, event in enumerate(self._events):
            uid = self._first_uid + index
            if uid < oldest:
                continue
            text = None
            if new.text:
                text = self._search[index]
                if text is None:
                    text = self._search[index] = _search_text(event)
            if new.matches(event, text):
                view.append(uid)
        self._view = view
        self.version += 1

    def clear(self) -> None:
        """Forget the stored events (aggregates and totals stay)."""
        self._first_uid = self._next_uid
        self._events.clear()
        self._search.clear()
        self._view.clear()
        self.version += 1

    # --- aggregates --------------------------------------------------------------------
    def active_processes(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        return sum(1 for g in self.processes.values() if now - g.last_seen <= ACTIVE_WINDOW_S)

    def provider_rows(self) -> list[tuple[str, ProviderStats]]:
        """Providers, busiest first."""
        return sorted(self.providers.items(), key=lambda item: -item[1].events)

    def group_rows(self, by: str = "process") -> list[GroupStats]:
        """Processes (``by="process"``) or identities, busiest first (a stable order:
        sorting by last seen would reshuffle the rows every second)."""
        groups = self.processes if by == "process" else self.identities
        return sorted(groups.values(), key=lambda g: (-g.events, g.key))

    def choices(self) -> dict[str, list[str]]:
        """Values offered by the filter drop-downs (what has been seen)."""
        return {
            "provider": sorted(self.providers),
            "content_class": sorted(self.classes),
            "decision": [d for d in ("allow", "audit", "deny") if d in self.decisions]
            + sorted(d for d in self.decisions if d not in ("allow", "audit", "deny")),
            "process": sorted(self.process_names),
        }


# --- formatting shared by the table and the tests --------------------------------------

COLUMNS = (
    "Time",
    "Process",
    "Provider",
    "Model",
    "Endpoint / class",
    "SDK",
    "Decision",
    "PII",
    "Identity",
    "Bytes",
)


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} TiB"  # pragma: no cover


def human_count(n: float) -> str:
    if n < 10_000:
        return f"{n:,.0f}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def format_time(ts: float, millis: bool = True) -> str:
    if not ts:
        return ""
    text = time.strftime("%H:%M:%S", time.localtime(ts))
    return text + f".{int((ts % 1) * 1000):03d}" if millis else text


def endpoint_of(event: Event) -> str:
    """What the table shows in the endpoint/class column."""
    if event.get("event_type") == "BLIND_SPOT":
        return f"⚠ BLIND · {event.get('tls_library') or 'unknown TLS'}"
    if event.get("mcp_method"):
        tool = event.get("mcp_tool")
        return f"MCP {event['mcp_method']}" + (f" · {tool}" if tool else "")
    endpoint = event.get("llm_endpoint") or ""
    content_class = event.get("content_class") or event.get("event_type") or ""
    if endpoint:
        return endpoint
    return content_class


def _seen_via(event: Event) -> str:
    """How busted read this event's plaintext: its TLS library when the event names
    one, "plain text" for an unencrypted socket, "TLS" for TLS read by a probe that
    does not say which library; "" when the event carries no plaintext."""
    kind = event.get("event_type") or ""
    if not (kind.startswith(("TLS_DATA", "DATA_"))
            or event.get("content_class") in ("LLM_REQUEST", "LLM_RESPONSE",
                                              "MCP_REQUEST", "MCP_RESPONSE")):
        return ""
    if event.get("tls_library"):
        return event["tls_library"]
    return "plain text" if kind.startswith("DATA_") else "TLS"


def visibility(g: GroupStats) -> tuple[str, str]:
    """The processes view's Visibility cell and its tooltip: blind (with the library
    and why) when a BLIND_SPOT named the process, else the way its plaintext is read."""
    if g.blind is not None:
        e = g.blind
        library = e.get("tls_library") or "unknown TLS"
        where = e.get("sni") or e.get("dst_ip") or "?"
        tip = (f"{e.get('exe') or g.process_name} -> {where}\n"
               f"{e.get('blind_reason') or 'its plaintext is not seen'}\n"
               f"What to do: {e.get('blind_advice') or '-'}")
        if g.seen_via:
            tip += "\n(other connections of this process are seen)"
        return f"⚠ blind: {library}", tip
    if g.seen_via == "TLS":
        return "seen", "busted reads this process's TLS plaintext"
    if g.seen_via:
        return f"seen · {g.seen_via}", f"busted reads this process's traffic ({g.seen_via})"
    return "—", "no plaintext of this process yet (connections only)"


def blind_processes(stats: dict[str, Any] | None, store_blind: dict[int, Event]) -> list[str]:
    """The blind programs for the header: the daemon's live table when it sends one,
    else the processes of the BLIND_SPOT events seen (demo, replays)."""
    if stats and "blind" in stats:
        rows = [e for e in stats.get("blind") or [] if e.get("pid") and e.get("alive")]
    else:
        rows = list(store_blind.values())
    seen: dict[int, str] = {}
    for e in rows:
        where = e.get("destination") or e.get("sni") or e.get("dst_ip") or "?"
        seen[e.get("pid") or 0] = (f"{e.get('process_name') or '?'} ({e.get('pid')}) -> {where}: "
                                   f"{e.get('tls_library') or 'unknown TLS'}, "
                                   f"{e.get('blind_reason') or ''}")
    return list(seen.values())


def row_cells(event: Event) -> tuple[str, ...]:
    """The text of one table row, in COLUMNS order."""
    pii = ""
    if event.get("pii_detected"):
        types = event.get("pii_types") or []
        pii = "PII " + ",".join(types[:2]) if types else "PII"
    stream = " ⇢" if event.get("llm_stream") else ""
    return (
        format_time(timestamp_of(event), millis=False),
        process_key(event),
        provider_of(event),
        (event.get("llm_model") or "") + stream,
        endpoint_of(event),
        event.get("agent_sdk") or "",
        decision_of(event) or "-",
        pii,
        event.get("identity_instance") or "",
        human_bytes(int(event.get("bytes") or 0)),
    )
