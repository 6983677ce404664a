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
from dataclasses import dataclass, field

from busted.config import MonitorConfig
from busted.kube import PodIndex, kubernetes_wanted
from busted.workers.stage import Event, Stage

MAX_AGENTS = 10_000
MAX_CONNECTIONS = 50_000
# Weight of each signal in the confidence (they sum to 1.0).
_WEIGHTS = {"process_name": 0.2, "uid": 0.1, "container": 0.2, "sdk": 0.3, "provider": 0.2}


@dataclass
class Agent:
    """What we know of one agent identity."""

    identity_id: int
    first_seen: float
    requests: int = 0
    models: set[str] = field(default_factory=set)
    tools: set[str] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)


def _is_conversation(event: Event) -> bool:
    cls = event.get("content_class") or ""
    return cls.startswith(("LLM_", "MCP_"))


class IdentityStage(Stage):
    role = "identity"

    def __init__(self, config: MonitorConfig, clock=time.time) -> None:
        super().__init__(config)
        self.clock = clock
        self.agents: OrderedDict[int, Agent] = OrderedDict()
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
        event["pod_service_account"] = info.service_account
        return f"{info.namespace}/{info.workload}"

    def _identify(self, event: Event) -> None:
        workload = self._add_pod(event) if self.pods is not None else ""
        key = self._connection_key(event)
        is_request = (event.get("content_class") or "").endswith("REQUEST")
        if not is_request and not event.get("agent_sdk") and key in self.connections:
            event.update(self.connections[key])
            self.connections.move_to_end(key)
            return
        signals = {
            "process_name": event.get("process_name") or "",
            "uid": str(event.get("uid", "")) if event.get("uid") is not None else "",
            # Every replica of a workload is the same agent: name the workload, not
            # the replica's container.
            "container": workload or event.get("container_id") or "",
            "sdk": event.get("agent_sdk") or "",
            "provider": event.get("llm_provider") or event.get("provider") or "",
        }
        fingerprint = "|".join(signals[k] for k in _WEIGHTS)
        identity_id = zlib.crc32(fingerprint.encode()) & 0x7FFFFFFF
        agent = self._agent(identity_id)
        if is_request:
            agent.requests += 1
        if event.get("llm_model"):
            agent.models.add(event["llm_model"])
        if event.get("mcp_tool"):
            agent.tools.add(event["mcp_tool"])
        pid = event.get("pid")
        if pid:
            agent.pids.add(pid)
            if len(agent.pids) > 64:  # a long-lived agent with many short workers
                agent.pids.pop()
        fields = {
            "identity_id": identity_id,
            "identity_instance": "-".join(
                str(x) for x in (signals["process_name"] or "proc", pid or 0,
                                 (signals["provider"] or "mcp").lower().replace(" ", "-"))),
            "identity_confidence": round(sum(w for k, w in _WEIGHTS.items() if signals[k]), 2),
            "identity_narrative": self._narrative(event, signals, agent),
        }
        event.update(fields)
        self.connections[key] = fields
        self.connections.move_to_end(key)
        while len(self.connections) > MAX_CONNECTIONS:
            self.connections.popitem(last=False)

    def _agent(self, identity_id: int) -> Agent:
        agent = self.agents.get(identity_id)
        if agent is None:
            agent = self.agents[identity_id] = Agent(identity_id, self.clock())
            self.stats["agents_seen"] += 1
            while len(self.agents) > MAX_AGENTS:
                self.agents.popitem(last=False)
        else:
            self.agents.move_to_end(identity_id)
        return agent

    @staticmethod
    def _narrative(event: Event, signals: dict[str, str], agent: Agent) -> str:
        if (event.get("content_class") or "").startswith("MCP_"):
            what = "MCP client"
            if agent.tools:
                what += " calling " + ", ".join(sorted(agent.tools)[:3])
        else:
            model = event.get("llm_model") or ""
            what = " ".join(x for x in (signals["provider"], model, "agent") if x)
        parts = [what]
        if signals["sdk"]:
            parts.append(f"via {signals['sdk']} SDK")
        parts.append(f"in {signals['process_name'] or 'a process'}")
        if event.get("pod_name"):
            parts.append(f"(pod {event.get('pod_namespace')}/{event['pod_name']})")
        elif signals["container"]:
            parts.append(f"(container {signals['container'][:12]})")
        parts.append(f"— {agent.requests} request{'s' if agent.requests != 1 else ''}"
                     f" from {len(agent.pids)} process{'es' if len(agent.pids) != 1 else ''}")
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
