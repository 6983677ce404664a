"""otlp:URL through the real pipeline into a local OTLP/HTTP receiver that decodes the
protobuf with opentelemetry-proto: GenAI semantic-convention attributes, the observed
process as resource, and prompt content only with --otlp-content."""

from __future__ import annotations

import json

from busted.bench.receivers import HttpReceiver

WELL_KNOWN = {"openai", "anthropic", "gcp.gemini", "mistral_ai", "groq", "deepseek",
              "azure.ai.openai", "aws.bedrock", "cohere", "perplexity", "x_ai"}


def _run(monitor_factory, short_dir, name: str, *extra: str) -> tuple[HttpReceiver, dict]:
    receiver = HttpReceiver(kind="otlp")
    truth = short_dir / f"{name}.jsonl"
    try:
        mon = monitor_factory("--source", "synthetic", "--rate", "1000", "--count", "400",
                              "--exit-when-done", "--output", f"otlp:http://127.0.0.1:{receiver.port}",
                              "--output", f"file:{truth}", "--spool-dir", str(short_dir / "spool"),
                              *extra, name=name, fmt="none")
        assert mon.wait_exit(60) == 0, mon.stderr_text()
    finally:
        receiver.close()
    events = {e["event_id"]: e for e in map(json.loads, truth.read_text().splitlines())}
    assert set(receiver.ids) == set(events)
    return receiver, events


def test_otlp_log_records_follow_the_genai_conventions_without_content(monitor_factory, short_dir):
    receiver, events = _run(monitor_factory, short_dir, "plain")
    llm = [r for r in receiver.records if r["attributes"].get("busted.content_class") == "LLM_REQUEST"]
    answers = [r for r in receiver.records
               if r["attributes"].get("busted.content_class") == "LLM_RESPONSE"]
    assert llm and answers
    for record in llm + answers:
        event = events[record["attributes"]["busted.event_id"]]
        attrs = record["attributes"]
        assert record["event_name"] == "gen_ai.client.inference.operation.details"
        assert attrs["gen_ai.operation.name"] in ("chat", "generate_content", "embeddings",
                                                  "text_completion")
        provider = attrs["gen_ai.provider.name"]
        assert provider == attrs["gen_ai.system"]
        if event["llm_provider"] in ("OpenAI", "Anthropic", "Google", "DeepSeek"):
            assert provider in WELL_KNOWN
        model_key = "gen_ai.request.model" if record in llm else "gen_ai.response.model"
        assert attrs[model_key] == event["llm_model"]
        if event.get("llm_input_tokens"):
            assert attrs["gen_ai.usage.input_tokens"] == event["llm_input_tokens"]
        if event.get("llm_output_tokens"):
            assert attrs["gen_ai.usage.output_tokens"] == event["llm_output_tokens"]
        assert attrs["server.address"] == (event["sni"] or event["dst_ip"])
        assert record["resource"]["process.pid"] == event["pid"]
        assert record["resource"]["process.executable.name"] == event["process_name"]
        assert record["resource"]["service.name"] == "busted" and record["resource"]["host.name"]
        assert record["time_unix_nano"] > 0
        # No content unless asked for: no message attribute, and the text nowhere.
        assert not {"gen_ai.input.messages", "gen_ai.output.messages",
                    "gen_ai.system_instructions"} & set(attrs)
        flat = json.dumps(record)
        for field in ("llm_user_message", "llm_system_prompt", "llm_response_preview"):
            if len(event.get(field) or "") > 20:  # long enough not to match by chance
                assert event[field] not in flat
    mcp = [r for r in receiver.records if str(r["attributes"].get("busted.content_class")).startswith("MCP_")]
    assert any(r["attributes"].get("mcp.method.name") for r in mcp)


def test_otlp_content_is_sent_only_when_opted_in(monitor_factory, short_dir):
    receiver, events = _run(monitor_factory, short_dir, "content", "--otlp-content", "--output-gzip")
    with_prompt = [r for r in receiver.records if "gen_ai.input.messages" in r["attributes"]]
    assert with_prompt
    for record in with_prompt:
        event = events[record["attributes"]["busted.event_id"]]
        message = record["attributes"]["gen_ai.input.messages"][0]
        assert message["role"] == "user"
        assert message["parts"][0] == {"type": "text", "content": event["llm_user_message"]}
    assert any("gen_ai.output.messages" in r["attributes"] for r in receiver.records)
    assert receiver.headers[0]["Content-Type"] == "application/x-protobuf"
    assert receiver.headers[0]["Content-Encoding"] == "gzip"
