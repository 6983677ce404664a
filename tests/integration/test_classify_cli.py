"""`busted classify` as users and scripts run it: the real CLI in a subprocess, on
fixture files, on stdin, on what the real SDKs send right now (recorded live from a
loopback server), and on bad arguments."""

# ruff: noqa: E501  (expectation tables read best one per line)
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
from monitor_process import BUSTED

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "classifier"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*BUSTED, "classify", *args], input=stdin, capture_output=True, timeout=60)


def lines(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_one_json_line_per_file_in_order() -> None:
    files = [
        CORPUS / "sdk/anthropic-messages.req.bin",
        CORPUS / "negatives/slack-post-message.bin",
        CORPUS / "negatives/empty.bin",
    ]
    proc = run(*map(str, files))  # no --sni: it would apply to every file
    assert proc.returncode == 0, proc.stderr
    first, second, third = lines(proc)
    assert first["content_class"] == "LLM_REQUEST" and first["llm_provider"] == "Anthropic-compatible"
    assert (
        first["agent_sdk"] == "anthropic-python" and first["llm_user_message"] == "Write a haiku about eBPF"
    )
    assert first["direction"] == "write" and first["bytes"] == files[0].stat().st_size
    assert "FAKEFAKE" not in proc.stdout.decode()  # the SDK's API key never printed
    assert second["content_class"] == "HTTP_REQUEST"
    assert third["content_class"] == "UNKNOWN" and third["bytes"] == 0


def test_stdin_direction_and_destination() -> None:
    data = (CORPUS / "sdk/ollama-chat.resp.bin").read_bytes()
    proc = run("--direction", "read", "--dst", "127.0.0.1:11434", "-", stdin=data)
    assert proc.returncode == 0, proc.stderr
    (got,) = lines(proc)
    assert got["content_class"] == "LLM_RESPONSE" and got["llm_provider"] == "Ollama"
    assert got["llm_output_tokens"] == 282 and got["dst_port"] == 11434


def test_garbage_is_still_exit_zero() -> None:
    proc = run("-", stdin=bytes(range(256)) * 8)
    assert proc.returncode == 0
    assert lines(proc)[0]["content_class"] == "UNKNOWN"


def test_missing_file_is_a_clear_error() -> None:
    proc = run(str(CORPUS / "sdk/anthropic-messages.req.bin"), "/nonexistent/capture.bin")
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "no such file: /nonexistent/capture.bin" in err and "Traceback" not in err
    assert proc.stdout == b""  # nothing half-printed


@pytest.mark.parametrize("args", [["--dst", "nonsense", "-"], ["--direction", "sideways", "-"], []])
def test_bad_arguments(args: list[str]) -> None:
    proc = run(*args, stdin=b"")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr.decode()


def _recorder():
    spec = importlib.util.spec_from_file_location("record_sdks", CORPUS / "record_sdks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("scenario", "sni", "want_request", "want_response"),
    [
        ("openai-chat-stream", "api.openai.com", {"llm_provider": "OpenAI", "agent_sdk": "openai-python", "llm_stream": True},
         {"llm_provider": "OpenAI", "llm_output_tokens": 9}),
        ("anthropic-messages", "api.anthropic.com", {"llm_provider": "Anthropic", "agent_sdk": "anthropic-python"},
         {"llm_provider": "Anthropic", "llm_output_tokens": 503}),
        ("openai-h2", "api.openai.com", {"llm_provider": "OpenAI", "llm_user_message": "Say hello over HTTP/2"},
         {"llm_provider": "OpenAI"}),
    ],
)  # fmt: skip
def test_live_sdk_capture(
    tmp_path: Path, scenario: str, sni: str, want_request: dict, want_response: dict
) -> None:
    """What today's installed SDK really sends, classified by the CLI."""
    ((request, response),) = _recorder().record(scenario)
    (tmp_path / "req.bin").write_bytes(request)
    (tmp_path / "resp.bin").write_bytes(response)
    req = lines(run("--sni", sni, str(tmp_path / "req.bin")))[0]
    resp = lines(run("--sni", sni, "--direction", "read", str(tmp_path / "resp.bin")))[0]
    assert req["content_class"] == "LLM_REQUEST" and resp["content_class"] == "LLM_RESPONSE"
    for key, value in want_request.items():
        assert req[key] == value, key
    for key, value in want_response.items():
        assert resp[key] == value, key
    assert "Bearer ***" in req["tls_payload"] or req["http_headers"].get("x-api-key") == "***"
