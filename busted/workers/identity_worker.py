"""The identity worker: which *agent* is behind an LLM or MCP event.

Pull socket: ``pipe/identity.sock`` (bound); pushes to ``pipe/policy.sock``. Runs as the
unprivileged ``busted`` account.

A pid is not an agent: agents restart, fork workers, run in several containers. Each
event carries weak signals — user, program, container, client SDK, provider — none
unique on its own. Together they name an agent *kind* that stays stable across
restarts; ``identity_id`` is a stable hash of them (the same agent gets the same id in
every run and on every host, so ids can be joined in a SIEM), ``identity_instance``
names the running process, ``identity_confidence`` says how many signals were there,
and ``identity_narrative`` sums the agent up in a sentence for people.

Responses carry no SDK header, so they inherit the identity of the last request made
on the same connection. Memory is bounded (least recently seen agents are forgotten).
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict

from busted.config import MonitorConfig
from busted.kube import PodIndex, kubernetes_wanted
from busted.workers.stage import Event, Stage

MAX_AGENTS = 10_000
MAX_CONNECTIONS = 50_000
# Weight of each signal in the confidence, in the order of the signals tuple:
# program, user, container/workload, SDK, provider (they sum to 1.0).
_WEIGHTS = (0.2, 0.1, 0.2, 0.3, 0.2)


def _is_conversation(event: Event) -> bool:
    cls = event.get("content_class") or ""
    return cls.startswith(("LLM_", "MCP_"))


class IdentityStage(Stage):
    role = "identity"

    def __init__(self, config: MonitorConfig, clock=time.time) -> None:
        super().__init__(config)
        self.clock = clock
        self.agents: OrderedDict[int, float] = OrderedDict()  # identity -> first seen
        self._fields: dict[tuple, dict] = {}
        # (pid, conn_id or dst) -> identity fields of the last request on it
        self.connections: OrderedDict[tuple, dict] = OrderedDict()
        self.pods: PodIndex | None = None

    def setup(self) -> None:
        if self.config.kubernetes and kubernetes_wanted(self.config.kubeconfig or None):
            self.pods = PodIndex(self.config.kubeconfig or None, self.config.node_name or None)
            self.pods.start()

    def wants(self, frame: bytes) -> bool:
        # Only LLM/MCP events get an identity; their class names show in the encoded batch.
        return b"LLM_" in frame or b"MCP_" in frame

    def process(self, events: list[Event]) -> list[Event]:
        for event in events:
            if _is_conversation(event):
                self._identify(event)
        return events

    def _connection_key(self, event: Event) -> tuple:
        return (event.get("pid"), event.get("conn_id") or (event.get("dst_ip"), event.get("dst_port")))

    def _add_pod(self, event: Event) -> str:
        """Fill the pod fields; returns the workload ("namespace/name") or ""."""
        info = self.pods.lookup(event.get("container_id") or "")
        if info is None:
            return ""
        event["pod_name"] = info.name
        event["pod_namespace"] = info.namespace
        event["pod_workload"] = info.workload
        event["pod_service_account"] = info.service_account
        return f"{info.namespace}/{info.workload}"

    def _identify(self, event: Event) -> None:
        get = event.get
        workload = self._add_pod(event) if self.pods is not None else ""
        key = self._connection_key(event)
        is_request = (get("content_class") or "").endswith("REQUEST")
        if not is_request and not get("agent_sdk") and key in self.connections:
            event.update(self.connections[key])
            self.connections.move_to_end(key)
            return
        uid = get("uid")
        signals = (
            get("process_name") or "",
            "" if uid is None else str(uid),
            # Every replica of a workload is the same agent: name the workload, not
            # the replica's container.
            workload or get("container_id") or "",
            get("agent_sdk") or "",
            get("llm_provider") or get("provider") or "",
        )
        # The fields depend only on these; most events repeat a combination seen just
        # before, so they are computed once (this stage decodes every LLM/MCP event).
        cache_key = (signals, get("pid") or 0, get("llm_model") or "", get("mcp_tool") or "",
                     get("pod_name") or "", is_request or (get("content_class") or "")[:4])
        fields = self._fields.get(cache_key)
        if fields is None:
            fields = self._compute(event, signals, cache_key[1])
            if len(self._fields) >= MAX_CONNECTIONS:
                self._fields.clear()
            self._fields[cache_key] = fields
        self._seen(fields["identity_id"])
        event.update(fields)
        self.connections[key] = fields
        self.connections.move_to_end(key)
        if len(self.connections) > MAX_CONNECTIONS:
            self.connections.popitem(last=False)

    def _compute(self, event: Event, signals: tuple[str, ...], pid: int) -> dict:
        identity_id = zlib.crc32("|".join(signals).encode()) & 0x7FFFFFFF
        process_name, _, _, sdk, provider = signals
        return {
            "identity_id": identity_id,
            "identity_instance": f"{process_name or 'proc'}-{pid}-"
                                 f"{(provider or 'mcp').lower().replace(' ', '-')}",
            "identity_confidence": round(sum(w for w, s in zip(_WEIGHTS, signals, strict=True) if s), 2),
            "identity_narrative": self._narrative(event, signals),
        }

    def _seen(self, identity_id: int) -> None:
        agents = self.agents
        if identity_id in agents:
            agents.move_to_end(identity_id)
            return
        agents[identity_id] = self.clock()
        self.stats["agents_seen"] += 1
        if len(agents) > MAX_AGENTS:
            agents.popitem(last=False)

    @staticmethod
    def _narrative(event: Event, signals: tuple[str, ...]) -> str:
        process_name, _, container, sdk, provider = signals
        if (event.get("content_class") or "").startswith("MCP_"):
            what = "MCP client"
            if event.get("mcp_tool"):
                what += f" calling {event['mcp_tool']}"
        else:
            what = " ".join(x for x in (provider, event.get("llm_model") or "", "agent") if x)
        parts = [what]
        if sdk:
            parts.append(f"via {sdk} SDK")
        parts.append(f"in {process_name or 'a process'}")
        if event.get("pod_name"):
            parts.append(f"(pod {event.get('pod_namespace')}/{event['pod_name']})")
        elif container:
            parts.append(f"(container {container[:12]})")
        return " ".join(parts)

    def tick(self, now: float) -> list[Event]:
        self.stats["agents"] = len(self.agents)
        if self.pods is not None:
            self.stats["pods_known"] = len(self.pods.pods)
        return []

    def close(self) -> list[Event]:
        if self.pods is not None:
            self.pods.stop()
        return []


STAGE = IdentityStage
