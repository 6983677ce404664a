"""The event schema and its wire encoding."""

from __future__ import annotations

import msgpack
import pytest

from busted import schema


def test_batches_round_trip_and_keep_unknown_fields():
    events = [schema.new_event(pid=1, event_type="TCP_CONNECT"),
              {"pid": 2, "from_a_newer_producer": [1, 2]}]
    decoded = schema.decode_batch(schema.encode_batch(events))
    assert decoded[0]["pid"] == 1 and decoded[1]["from_a_newer_producer"] == [1, 2]


def test_missing_fields_read_as_defaults():
    full = schema.complete({"pid": 3, "llm_model": None})
    assert set(schema.FIELDS) <= set(full)
    assert full["pid"] == 3 and full["llm_model"] == "" and full["pii_types"] == []
    # Mutable defaults are fresh copies, never shared between events.
    full["pii_types"].append("email")
    assert schema.complete({})["pii_types"] == []


def test_every_field_named_by_the_contract_exists():
    contract = """event_type timestamp pid tid uid process_name src_ip src_port dst_ip dst_port
    bytes sni provider content_class llm_provider llm_endpoint llm_model agent_sdk
    classifier_confidence pii_detected pii_types llm_user_message llm_system_prompt llm_stream
    llm_input_tokens llm_output_tokens mcp_method mcp_tool identity_id identity_instance
    identity_confidence identity_narrative policy policy_reasons container_id cgroup_id
    pod_name pod_namespace tls_payload""".split()
    assert set(contract) <= set(schema.FIELDS)
    assert set(schema.ProcessedEvent.__annotations__) == set(schema.FIELDS)


def test_new_event_rejects_misspelled_fields():
    with pytest.raises(TypeError, match="llm_modle"):
        schema.new_event(llm_modle="gpt-4")


def test_a_newer_schema_version_is_still_read():
    frame = msgpack.packb([schema.SCHEMA_VERSION + 1, [{"pid": 9}]])
    assert schema.decode_batch(frame) == [{"pid": 9}]


@pytest.mark.parametrize("frame", [b"", b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([1]),
                                   msgpack.packb([1, [1, 2]]), msgpack.packb(["v", []])])
def test_garbage_is_a_decode_error(frame):
    with pytest.raises(schema.DecodeError):
        schema.decode_batch(frame)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 64, 65535, 65536])
def test_batch_length_reads_only_the_header(n):
    assert schema.batch_length(schema.encode_batch([{}] * n)) == n


def test_batch_length_refuses_non_batches():
    with pytest.raises(schema.DecodeError):
        schema.batch_length(msgpack.packb({"a": 1}))
