"""Labels that cost nothing: busted's own classifier names what a visible connection
carried, and that name labels the behaviour of its exchanges.

A ``TCP_EXCHANGE`` event carries ``plaintext_conn_id``, the conn_id of the connection's
payload events (for TLS, the library's connection object) once any was seen; classified
messages carry that conn_id and the pid. One label per connection, the strongest class
any of its messages had: an LLM streamed answer > another LLM message > MCP > HTTP.
Exchanges of connections with no classified message are ``unknown`` (not trained on).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from busted.ml.features import FEATURES, judgeable, vector

LLM_STREAM = "llm_stream"
LLM = "llm"
MCP = "mcp"
HTTP = "http"
UNKNOWN = "unknown"
RANK = {UNKNOWN: 0, HTTP: 1, MCP: 2, LLM: 3, LLM_STREAM: 4}
DESCRIPTION = {LLM_STREAM: "an LLM stream", LLM: "an LLM response", MCP: "MCP",
               HTTP: "plain HTTP", UNKNOWN: "nothing known"}


def label_of(event: dict[str, Any]) -> str:
    """The label one classified message gives its connection."""
    content = str(event.get("content_class") or "")
    if content.startswith("LLM_"):
        return LLM_STREAM if event.get("llm_stream") else LLM
    if content.startswith("MCP_"):
        return MCP
    if content.startswith("HTTP_"):
        return HTTP
    return UNKNOWN


class Labeller:
    """Remembers the label of each visible connection, keyed (pid, conn_id): in a dict
    offline, in a bounded table (an LRU) in the daemon."""

    def __init__(self, table: MutableMapping[tuple[int, int], str] | None = None) -> None:
        self.labels: MutableMapping[tuple[int, int], str] = {} if table is None else table

    def see(self, event: dict[str, Any]) -> None:
        label = label_of(event)
        if label == UNKNOWN:
            return
        key = (int(event.get("pid", 0)), int(event.get("conn_id", 0)))
        if RANK[label] > RANK.get(self.labels.get(key, UNKNOWN), 0):
            self.labels[key] = label

    def label(self, exchange_event: dict[str, Any]) -> str:
        plain = int(exchange_event.get("plaintext_conn_id") or 0)
        if not plain:
            return UNKNOWN
        return self.labels.get((int(exchange_event.get("pid", 0)), plain), UNKNOWN)


def rows(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Labelled feature rows from an event stream (read whole: a message is often
    classified after its exchange ended). One row per judgeable exchange."""
    labeller = Labeller()
    exchanges = []
    for event in events:
        if event.get("event_type") == "TCP_EXCHANGE":
            if judgeable(event.get("exchange") or {}):
                exchanges.append(event)
        elif event.get("content_class"):
            labeller.see(event)
    for event in exchanges:
        yield {
            "label": labeller.label(event),
            "features": vector(event["exchange"]),
            "process_name": event.get("process_name", ""),
            "pid": event.get("pid", 0),
            "dst": event.get("sni") or event.get("dns_name") or event.get("dst_ip", ""),
            "conn_id": event.get("conn_id", 0),
        }


__all__ = ["FEATURES", "Labeller", "label_of", "rows"]
