"""A synthetic source: realistic LLM, MCP and other traffic at a chosen rate.

Used to demonstrate and measure the pipeline without the kernel (``--source
synthetic``). Events look like what the pipeline produces after classification — the
classify stage passes events that already carry a ``content_class`` — so the same
events can feed outputs, policies and the dashboard.

Generation is cheap on purpose (a shallow copy of a pre-built template per event):
the pipeline benchmark must measure the pipeline, not this generator.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

# (process, pid, uid, sdk, provider, host, dst_ip, model, endpoint)
_CLIENTS = [
    ("python3", 4101, 1000, "openai-python", "OpenAI", "api.openai.com", "162.159.140.245",
     "gpt-4o", "/v1/chat/completions"),
    ("python3", 4102, 1000, "anthropic-python", "Anthropic", "api.anthropic.com",
     "160.79.104.10", "claude-sonnet-4-20250514", "/v1/messages"),
    ("node", 5230, 1001, "openai-node", "OpenAI", "api.openai.com", "162.159.140.245",
     "gpt-4o-mini", "/v1/chat/completions"),
    ("node", 5231, 1001, "anthropic-typescript", "Anthropic", "api.anthropic.com",
     "160.79.104.10", "claude-3-5-haiku-20241022", "/v1/messages"),
    ("agent", 6100, 1002, "google-genai", "Google", "generativelanguage.googleapis.com",
     "142.250.74.74", "gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent"),
    ("curl", 7300, 1000, "curl", "Mistral", "api.mistral.ai", "104.18.14.115",
     "mistral-large-latest", "/v1/chat/completions"),
    ("ollama-cli", 7400, 1000, "ollama-python", "Ollama", "localhost", "127.0.0.1",
     "llama3.1:8b", "/api/chat"),
    ("litellm", 7500, 1003, "litellm", "Groq", "api.groq.com", "104.18.2.205",
     "llama-3.3-70b-versatile", "/openai/v1/chat/completions"),
]

_PROMPTS = [
    ("You are a helpful assistant.", "Write me a haiku about eBPF", False),
    ("You are a senior code reviewer.", "Review this diff for race conditions.", False),
    ("You are a support agent for ACME.", "Customer jane.doe@example.com asks for a refund "
     "on order 1182", True),
    ("", "Summarize the attached incident report in five bullet points.", False),
    ("You are a data analyst.", "My card 4111 1111 1111 1111 was charged twice", True),
]

_MCP_TOOLS = [
    ("tools/call", "read_file"), ("tools/call", "run_shell_command"), ("tools/list", ""),
    ("tools/call", "search_docs"), ("initialize", ""), ("resources/read", ""),
]


def _templates() -> list[dict[str, Any]]:
    rng = random.Random(7)
    out: list[dict[str, Any]] = []
    for (proc, pid, uid, sdk, provider, host, ip, model, endpoint), (system, user, pii) in \
            itertools.product(_CLIENTS, _PROMPTS):
        port = 11434 if provider == "Ollama" else 443
        base = {
            "pid": pid, "tid": pid, "uid": uid, "gid": uid, "process_name": proc,
            "src_ip": "10.0.1.5", "src_port": rng.randint(32768, 60999),
            "dst_ip": ip, "dst_port": port, "sni": "" if port != 443 else host,
            "provider": provider, "llm_provider": provider, "llm_model": model,
            "llm_endpoint": endpoint, "agent_sdk": sdk, "cgroup_id": 1,
        }
        stream = rng.random() < 0.5
        body = (f'{{"model":"{model}","stream":{str(stream).lower()},"messages":['
                f'{{"role":"system","content":"{system}"}},{{"role":"user","content":"{user}"}}]}}')
        request = (f"POST {endpoint} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-***\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")
        out.append({
            **base, "event_type": "TLS_DATA_WRITE" if port == 443 else "DATA_WRITE",
            "direction": "write", "content_class": "LLM_REQUEST", "bytes": len(request),
            "llm_stream": stream, "llm_system_prompt": system, "llm_user_message": user,
            "classifier_confidence": 0.97, "pii_detected": pii,
            "pii_types": ["email"] if "@" in user else ["credit_card"] if pii else [],
            "tls_payload": request,
        })
        answer = "Kernel hooks listen / packets whisper their secrets / the map remembers"
        out.append({
            **base, "event_type": "TLS_DATA_READ" if port == 443 else "DATA_READ",
            "direction": "read", "content_class": "LLM_RESPONSE",
            "bytes": rng.randint(600, 4000), "llm_stream": stream,
            "llm_response_preview": answer, "classifier_confidence": 0.95,
            "llm_input_tokens": rng.randint(20, 900), "llm_output_tokens": rng.randint(10, 700),
            "tls_payload": f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{answer}",
        })
    for method, tool in _MCP_TOOLS:
        params = f',"params":{{"name":"{tool}","arguments":{{}}}}' if tool else ""
        body = f'{{"jsonrpc":"2.0","id":3,"method":"{method}"{params}}}'
        out.append({
            "pid": 8800, "tid": 8800, "uid": 1000, "process_name": "mcp-client",
            "event_type": "TLS_DATA_WRITE", "direction": "write", "src_ip": "10.0.1.5",
            "src_port": 51000, "dst_ip": "203.0.113.20", "dst_port": 443,
            "sni": "mcp.example.com", "content_class": "MCP_REQUEST", "mcp_method": method,
            "mcp_tool": tool, "agent_sdk": "mcp-python", "classifier_confidence": 0.9,
            "bytes": len(body), "tls_payload": f"POST /mcp HTTP/1.1\r\nHost: mcp.example.com"
            f"\r\nContent-Type: application/json\r\n\r\n{body}",
        })
    out.append({"pid": 4101, "process_name": "python3", "event_type": "DNS_QUERY",
                "dns_name": "api.openai.com", "dst_ip": "127.0.0.53", "dst_port": 53})
    out.append({"pid": 4101, "process_name": "python3", "event_type": "TCP_CONNECT",
                "src_ip": "10.0.1.5", "src_port": 40112, "dst_ip": "162.159.140.245",
                "dst_port": 443})
    out.append({"pid": 9100, "process_name": "apt", "event_type": "TLS_DATA_WRITE",
                "direction": "write", "content_class": "HTTP_REQUEST", "dst_ip": "151.101.2.132",
                "dst_port": 443, "sni": "deb.debian.org", "bytes": 120,
                "tls_payload": "GET /debian/dists/bookworm/InRelease HTTP/1.1\r\n"
                "Host: deb.debian.org\r\n\r\n"})
    return out


class SyntheticSource:
    """Produces ``rate`` events per second (0 = as fast as the consumer polls), stopping
    after ``count`` events when ``count`` is set."""

    CHUNK = 512  # most events returned by one poll

    def __init__(self, rate: float = 50.0, count: int = 0, seed: int = 1,
                 clock=time.monotonic) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = rate
        self.count = count
        self.clock = clock
        self.exhausted = False
        self.produced = 0
        self._templates = _templates()
        random.Random(seed).shuffle(self._templates)
        self._cycle = itertools.cycle(self._templates)
        self._start = 0.0
        self._last = 0.0

    def start(self) -> None:
        self._start = self._last = self.clock()

    def _due(self, now: float) -> int:
        if self.rate == 0:
            return self.CHUNK
        return int((now - self._start) * self.rate) - self.produced

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        due = self._due(self.clock())
        if due <= 0:
            wait = min(timeout_s, (1 - due) / self.rate)
            if wait > 0:
                time.sleep(wait)
            due = self._due(self.clock())
            if due <= 0:
                return []
        n = min(due, self.CHUNK)
        if self.count:
            n = min(n, self.count - self.produced)
        wall = time.time()
        cycle = self._cycle
        events = [{**next(cycle), "timestamp": wall} for _ in range(n)]
        self.produced += n
        self._last = self.clock()
        if self.count and self.produced >= self.count:
            self.exhausted = True
        return events

    def feedback(self, command: dict[str, Any]) -> None:
        pass

    def stats(self) -> dict[str, int]:
        # How long production took: a rate is only "sustained" if this matches the offer.
        return {"active_ms": int((self._last - self._start) * 1000)}

    def close(self) -> None:
        pass
