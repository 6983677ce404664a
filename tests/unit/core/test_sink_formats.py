"""What the sinks put on the wire, without a receiver: --output spellings, names shown in
status, the RFC 5424 message, OTLP records and their opt-in content, header sources."""

from __future__ import annotations

import os

import orjson
import pytest

from busted.errors import UsageError
from busted.otlp import LogEncoder, operation_name, provider_name
from busted.senders import load_headers, syslog_message
from busted.sinks import parse_spec, redact_target, sink_label

EVENT = {"event_id": "ab12-cd-7", "seq": 7, "event_type": "TLS_DATA_WRITE",
         "timestamp": "2026-03-01T10:20:30.456Z", "content_class": "LLM_REQUEST",
         "llm_provider": "Anthropic", "llm_model": "claude-sonnet-4", "pid": 4242,
         "process_name": "node", "uid": 1000, "policy": "deny",
         "llm_endpoint": "/v1/messages", "llm_user_message": 'say "hi" ] \\ now',
         "llm_system_prompt": "be brief", "llm_input_tokens": 12, "sni": "api.anthropic.com",
         "dst_port": 443}


@pytest.mark.parametrize("spec, kind, args", [
    ("syslog:siem:514", "syslog-udp", ("siem", 514)),
    ("syslog+udp://siem:5514", "syslog-udp", ("siem", 5514)),
    ("syslog+tcp://siem.example:1514", "syslog-tcp", ("siem.example", 1514)),
    ("syslog+tls://siem.example", "syslog-tls", ("siem.example", 6514)),
    ("webhook:https://h.example/in?x=1", "webhook", ("https://h.example/in?x=1",)),
    ("otlp:http://collector:4318", "otlp", ("http://collector:4318",)),
])
def test_output_spellings(spec, kind, args):
    assert parse_spec(spec) == (kind, args)


@pytest.mark.parametrize("spec", ["syslog+tcp://", "syslog+tls://h:99999", "otlp:ftp://x",
                                  "webhook:https://u:p@h/x", "kafka:b:1"])
def test_bad_spellings_are_usage_errors(spec):
    with pytest.raises(UsageError):
        parse_spec(spec)


def test_labels_are_stable_and_shown_targets_hide_the_query():
    spec = "webhook:https://siem.example/ingest?token=abc"
    assert sink_label(spec) == sink_label(spec)
    assert sink_label(spec).startswith("webhook-siem.example-443-")
    assert sink_label(spec) != sink_label("webhook:https://siem.example/other")
    assert "abc" not in redact_target(spec) and redact_target(spec).endswith("?…")


def test_syslog_message_is_rfc5424_with_escaped_structured_data():
    line = orjson.dumps(EVENT)
    message = syslog_message(line)
    head, _, body = message.partition(b"] ")
    assert message.startswith(b"<36>1 2026-03-01T10:20:30.456Z ")  # security, warning (deny)
    assert b" busted " in head and b" LLM_REQUEST [busted@32473 " in head
    assert b'event_id="ab12-cd-7"' in head and b'provider="Anthropic"' in head
    assert b'pid="4242"' in head and b'decision="deny"' in head
    assert body == line  # the JSON event, whole, as the message


def test_syslog_sd_values_escape_quote_backslash_and_bracket():
    message = syslog_message(orjson.dumps({"process_name": 'a"b\\c]d'}))
    assert b'process="a\\"b\\\\c\\]d"' in message


def test_otlp_records_use_the_genai_names_and_leave_content_out():
    from busted.bench.receivers import decode_otlp

    records = decode_otlp(LogEncoder().encode([orjson.dumps(EVENT)]))
    assert len(records) == 1
    attrs = records[0]["attributes"]
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "anthropic"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "claude-sonnet-4"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["busted.event_id"] == "ab12-cd-7" and attrs["busted.policy.decision"] == "deny"
    assert records[0]["resource"]["process.pid"] == 4242
    assert records[0]["severity_number"] == 13
    assert records[0]["time_unix_nano"] == 1772360430456000000
    assert "say" not in str(records) and "be brief" not in str(records)
    with_content = decode_otlp(LogEncoder(content=True).encode([orjson.dumps(EVENT)]))[0]
    assert with_content["attributes"]["gen_ai.system_instructions"] == [
        {"type": "text", "content": "be brief"}]


def test_provider_and_operation_names():
    assert provider_name("Google") == "gcp.gemini" and provider_name("AWS Bedrock") == "aws.bedrock"
    assert provider_name("OpenAI-compatible") == "openai_compatible"
    assert operation_name({"llm_endpoint": "/v1/embeddings"}) == "embeddings"
    assert operation_name({"llm_endpoint": "/v1beta/models/x:generateContent"}) == "generate_content"
    assert operation_name({"content_class": "MCP_REQUEST", "mcp_method": "tools/call"}) == "execute_tool"


def test_header_sources(tmp_path, monkeypatch):
    path = tmp_path / "h"
    path.write_text("# comment\n\nAuthorization: Bearer abc\n")
    path.chmod(0o600)
    monkeypatch.setenv("BUSTED_H", "X-Key: 1")
    assert load_headers((f"file:{path}", "env:BUSTED_H")) == {"Authorization": "Bearer abc",
                                                              "X-Key": "1"}
    path.write_text("no colon here\n")
    with pytest.raises(UsageError, match="Name: value") as caught:
        load_headers((f"file:{path}",))
    assert "no colon" not in str(caught.value)  # values are never echoed
    link = tmp_path / "link"
    os.symlink(path, link)
    with pytest.raises(UsageError):
        load_headers((f"file:{link}",))
    with pytest.raises(UsageError, match="file:PATH or env:VAR"):
        load_headers(("Authorization: Bearer x",))
