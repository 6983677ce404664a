"""What the detail panel says about one event, as plain data (no Dear PyGui).

The panel shows decrypted prompts, so headers are masked here once more even though
the daemon already masks them: the dashboard must never be the place a key leaks from
(an older daemon, a replayed file, a header the daemon did not know was secret).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The daemon's own masking, applied once more: the dashboard must never be the place a
# key leaks from (an older daemon, a replayed file).
from busted.classifier.redact import is_secret_header, mask_header_value, mask_text
from busted_gui.model import format_time, human_bytes, provider_of, timestamp_of

Event = dict[str, Any]

TEXT_LIMIT = 4000  # characters of a prompt shown (the panel is not a pager)


def masked_headers(headers: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Headers as (name, value) with secrets masked, sorted by name: credential headers
    by name, key-looking tokens in any other value."""
    return [(str(name), mask_header_value(str(name), str(value)) if is_secret_header(
                str(name).lower()) else mask_text(str(value)))
            for name, value in sorted((headers or {}).items())]


@dataclass
class Section:
    title: str
    fields: list[tuple[str, str]] = field(default_factory=list)  # label, value
    text: str = ""  # a block of wrapped text (prompts)
    mono: bool = False


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit:,} more characters)"


def sections(event: Event) -> list[Section]:
    """The panel's content for ``event``, most important first."""
    g = event.get
    out: list[Section] = []

    policy = Section("Policy")
    policy.fields.append(("decision", g("policy") or "not evaluated"))
    for reason in g("policy_reasons") or []:
        policy.fields.append(("reason", str(reason)))
    if g("action"):
        policy.fields.append(("action", str(g("action"))))
    if g("hold_ms"):
        policy.fields.append(("held", f"{g('hold_ms'):.1f} ms"))
    if g("policy_error"):
        policy.fields.append(("error", str(g("policy_error"))))
    if g("pii_detected"):
        policy.fields.append(("PII", ", ".join(g("pii_types") or []) or "yes"))
    out.append(policy)

    if g("mcp_method") or g("mcp_tool"):
        mcp = Section("MCP")
        mcp.fields.append(("method", g("mcp_method") or ""))
        if g("mcp_tool"):
            mcp.fields.append(("tool", g("mcp_tool")))
        out.append(mcp)

    for title, name in (
        ("System prompt", "llm_system_prompt"),
        ("User message", "llm_user_message"),
        ("Response preview", "llm_response_preview"),
    ):
        if g(name):
            text = clip(mask_text(str(g(name))))
            out.append(Section(title, text=text, mono=name != "llm_system_prompt"))

    llm = Section("Request")
    for label, value in (
        ("provider", provider_of(event)),
        ("model", g("llm_model")),
        ("endpoint", g("llm_endpoint")),
        ("class", g("content_class")),
        ("stream", "yes" if g("llm_stream") else ""),
        ("SDK", " ".join(x for x in (g("agent_sdk"), g("agent_sdk_version")) if x)),
        ("tokens", _tokens(event)),
        ("confidence", f"{g('classifier_confidence'):.2f}" if g("classifier_confidence") else ""),
    ):
        if value:
            llm.fields.append((label, str(value)))
    if llm.fields:
        out.append(llm)

    proc = Section("Process")
    for label, value in (
        ("process", g("process_name")),
        ("pid / tid", f"{g('pid') or 0} / {g('tid') or 0}"),
        ("uid", str(g("uid")) if g("uid") is not None else ""),
        ("container", (g("container_id") or "")[:12]),
        ("pod", "/".join(x for x in (g("pod_namespace"), g("pod_name")) if x)),
        ("workload", g("pod_workload")),
        ("cgroup", str(g("cgroup_id") or "")),
    ):
        if value:
            proc.fields.append((label, str(value)))
    out.append(proc)

    ident = Section("Identity")
    for label, value in (
        ("instance", g("identity_instance")),
        ("id", str(g("identity_id") or "")),
        ("confidence", f"{g('identity_confidence'):.2f}" if g("identity_confidence") else ""),
        ("narrative", g("identity_narrative")),
    ):
        if value:
            ident.fields.append((label, str(value)))
    if ident.fields:
        out.append(ident)

    conn = Section("Connection")
    src = f"{g('src_ip')}:{g('src_port')}" if g("src_ip") else ""
    dst = f"{g('dst_ip')}:{g('dst_port')}" if g("dst_ip") else ""
    for label, value in (
        ("event", " ".join(x for x in (g("event_type"), g("direction")) if x)),
        ("time", format_time(timestamp_of(event))),
        ("seq", str(g("seq") or "")),
        ("from → to", f"{src} → {dst}" if src or dst else ""),
        ("SNI", g("sni")),
        ("DNS", g("dns_name")),
        ("bytes", human_bytes(int(g("bytes") or 0)) if g("bytes") else ""),
        ("truncated", "yes" if g("truncated") else ""),
    ):
        if value:
            conn.fields.append((label, str(value)))
    out.append(conn)

    headers = masked_headers(g("http_headers"))
    if headers:
        out.append(Section("Headers (secrets masked)", fields=headers, mono=True))
    return out


def _tokens(event: Event) -> str:
    i, o = event.get("llm_input_tokens") or 0, event.get("llm_output_tokens") or 0
    if not i and not o:
        return ""
    return f"{i:,} in / {o:,} out"
