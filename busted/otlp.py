"""Events as OpenTelemetry log records (OTLP/HTTP protobuf), for ``--output otlp:URL``.

Fleets ship logs to Splunk, Datadog, Elastic, Grafana and the rest through an
OpenTelemetry collector, and the collector's processors and the back ends' GenAI views
key on the GenAI semantic conventions, so LLM events use their names:

- ``gen_ai.provider.name`` (and the older ``gen_ai.system``), ``gen_ai.operation.name``,
  ``gen_ai.request.model`` (requests) / ``gen_ai.response.model`` (responses),
  ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``server.address``,
  ``server.port``; MCP messages ``mcp.method.name`` and ``gen_ai.tool.name``;
- the event name ``gen_ai.client.inference.operation.details`` for LLM messages;
- prompt and answer content (``gen_ai.system_instructions``, ``gen_ai.input.messages``,
  ``gen_ai.output.messages``) only with ``--otlp-content``: the conventions make content
  opt-in, and a collector pipeline often reaches more people than the SIEM;
- the observed process as resource attributes (``process.pid``,
  ``process.executable.name``, ``container.id``, ``k8s.pod.name``, ...), beside the
  monitor's host (``host.name``, ``service.name=busted``); a batch is grouped by process.

What the conventions do not name stays under ``busted.*`` (event id, event type, content
class, policy decision and reasons, PII, the SDK). The protobuf classes come from the
``opentelemetry-proto`` package (the project's own generated code), so the encoding is
OTLP's and not a copy of it.
"""

from __future__ import annotations

import calendar
import re
import socket
import time
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from busted import __version__

INFERENCE_EVENT = "gen_ai.client.inference.operation.details"
# Names of providers as the classifier writes them -> the conventions' well-known values.
PROVIDERS = {
    "OpenAI": "openai", "Anthropic": "anthropic", "Google": "gcp.gemini",
    "Mistral": "mistral_ai", "Groq": "groq", "DeepSeek": "deepseek",
    "Azure": "azure.ai.openai", "AWS Bedrock": "aws.bedrock", "Cohere": "cohere",
    "Perplexity": "perplexity", "xAI": "x_ai",
}
_SEVERITY = {"deny": (13, "WARN"), "audit": (10, "INFO2")}
_INFO = (9, "INFO")
# Resource attributes of the observed process (conventions' name -> event field).
_PROCESS = (("process.pid", "pid"), ("process.executable.name", "process_name"),
            ("process.user.id", "uid"), ("container.id", "container_id"),
            ("k8s.pod.name", "pod_name"), ("k8s.namespace.name", "pod_namespace"))
# Fields kept under busted.* (attribute -> event field).
_OWN = (("busted.event_id", "event_id"), ("busted.event_type", "event_type"),
        ("busted.content_class", "content_class"), ("busted.direction", "direction"),
        ("busted.policy.decision", "policy"), ("busted.policy.reasons", "policy_reasons"),
        ("busted.action", "action"), ("busted.pii_detected", "pii_detected"),
        ("busted.pii_types", "pii_types"), ("busted.agent_sdk", "agent_sdk"),
        ("busted.llm.endpoint", "llm_endpoint"), ("busted.llm.stream", "llm_stream"),
        ("busted.identity", "identity_instance"), ("thread.name", "thread_name"),
        ("busted.dns.name", "dns_name"), ("busted.bytes", "bytes"))


def provider_name(provider: str) -> str:
    return PROVIDERS.get(provider) or re.sub(r"[^a-z0-9.]+", "_", provider.lower()).strip("_")


def operation_name(event: dict[str, Any]) -> str:
    """The conventions' ``gen_ai.operation.name`` for an LLM or MCP message."""
    if str(event.get("content_class", "")).startswith("MCP_"):
        return "execute_tool" if event.get("mcp_method") == "tools/call" else ""
    endpoint = str(event.get("llm_endpoint") or "").lower()
    if "embed" in endpoint:
        return "embeddings"
    if "generatecontent" in endpoint:
        return "generate_content"
    if endpoint.endswith("/completions") and "chat" not in endpoint:
        return "text_completion"
    return "chat"


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(
            values=[KeyValue(key=str(k), value=any_value(v)) for k, v in value.items()]))
    return AnyValue(string_value=str(value))


def _attributes(pairs: list[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in pairs
            if v is not None and v != "" and v != []]


def _text(content: str) -> list[dict[str, str]]:
    return [{"type": "text", "content": content}]


def genai_attributes(event: dict[str, Any], content: bool) -> list[tuple[str, Any]]:
    """The GenAI (and MCP) attributes of one LLM or MCP message."""
    cls = str(event.get("content_class") or "")
    pairs: list[tuple[str, Any]] = []
    provider = event.get("llm_provider") or event.get("provider") or ""
    if provider:
        pairs += [("gen_ai.provider.name", provider_name(provider)),
                  ("gen_ai.system", provider_name(provider))]
    pairs.append(("gen_ai.operation.name", operation_name(event)))
    model = event.get("llm_model")
    pairs.append(("gen_ai.response.model" if cls.endswith("_RESPONSE") else "gen_ai.request.model",
                  model))
    if event.get("llm_input_tokens"):
        pairs.append(("gen_ai.usage.input_tokens", int(event["llm_input_tokens"])))
    if event.get("llm_output_tokens"):
        pairs.append(("gen_ai.usage.output_tokens", int(event["llm_output_tokens"])))
    if cls.startswith("MCP_"):
        pairs += [("mcp.method.name", event.get("mcp_method")), ("gen_ai.tool.name", event.get("mcp_tool"))]
    if content:  # the conventions' opt-in content attributes, in their structured form
        if event.get("llm_system_prompt"):
            pairs.append(("gen_ai.system_instructions", _text(event["llm_system_prompt"])))
        if event.get("llm_user_message"):
            pairs.append(("gen_ai.input.messages",
                          [{"role": "user", "parts": _text(event["llm_user_message"])}]))
        if event.get("llm_response_preview"):
            pairs.append(("gen_ai.output.messages",
                          [{"role": "assistant", "parts": _text(event["llm_response_preview"])}]))
    return pairs


def _iso_to_ns(stamp: Any) -> int:
    if isinstance(stamp, (int, float)):
        return int(stamp * 1e9)
    try:  # "2026-01-31T12:00:00.123Z", as the output worker writes it
        whole, _, frac = str(stamp).rstrip("Z").partition(".")
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return int(seconds) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
    except ValueError:
        return 0


class LogEncoder:
    """Turns batches of JSON events into ``ExportLogsServiceRequest`` bytes."""

    def __init__(self, content: bool = False) -> None:
        self.content = content
        self.host = [KeyValue(key=k, value=any_value(v)) for k, v in (
            ("service.name", "busted"), ("service.version", __version__),
            ("host.name", socket.gethostname()), ("os.type", "linux"))]
        self.scope = InstrumentationScope(name="busted", version=__version__)

    def record(self, event: dict[str, Any], now_ns: int) -> LogRecord:
        cls = str(event.get("content_class") or "")
        severity, severity_text = _SEVERITY.get(event.get("policy"), _INFO)
        pairs = [(name, event.get(key)) for name, key in _OWN]
        pairs += [("server.address", event.get("sni") or event.get("dst_ip")),
                  ("server.port", event.get("dst_port") or None)]
        name = f"busted.{str(event.get('event_type') or 'event').lower()}"
        if cls.startswith(("LLM_", "MCP_")):
            pairs += genai_attributes(event, self.content)
            name = INFERENCE_EVENT if cls.startswith("LLM_") else "busted.mcp"
        body = " ".join(str(x) for x in (cls or event.get("event_type"), event.get("process_name"),
                                          event.get("llm_provider"), event.get("llm_model"),
                                          event.get("mcp_tool")) if x)
        return LogRecord(time_unix_nano=_iso_to_ns(event.get("timestamp")),
                         observed_time_unix_nano=now_ns, severity_number=severity,
                         severity_text=severity_text, event_name=name,
                         body=AnyValue(string_value=body), attributes=_attributes(pairs))

    def encode(self, records: list[bytes]) -> bytes:
        now_ns = time.time_ns()
        groups: dict[tuple, list[LogRecord]] = {}
        for raw in records:
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            key = tuple(event.get(field) for _, field in _PROCESS)
            groups.setdefault(key, []).append(self.record(event, now_ns))
        resource_logs = []
        for key, logs in groups.items():
            process = _attributes([(name, value) for (name, _), value in zip(_PROCESS, key, strict=True)])
            resource_logs.append(ResourceLogs(
                resource=Resource(attributes=[*self.host, *process]),
                scope_logs=[ScopeLogs(scope=self.scope, log_records=logs)]))
        return ExportLogsServiceRequest(resource_logs=resource_logs).SerializeToString()


def rejected_records(answer: bytes) -> tuple[int, str]:
    """How many records a collector's partial success rejected, and its message."""
    if not answer:
        return 0, ""
    try:
        response = ExportLogsServiceResponse.FromString(answer)
    except Exception:  # noqa: BLE001 - a 2xx with a body we cannot read is still a success
        return 0, ""
    return response.partial_success.rejected_log_records, response.partial_success.error_message
