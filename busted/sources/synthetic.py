"""Synthetic traffic: realistic LLM, MCP and DNS events, for ``--source synthetic``,
``busted bench pipeline`` and the dashboard's demo mode.

:class:`TrafficGenerator` is seeded and plays a cast of processes and agents (Python and
Node SDKs, curl, an MCP client, a container workload, a local Ollama user) talking to
many providers: request then response, streaming or not, with system prompts, user
messages, response previews, token counts, masked headers, PII hits and MCP tool calls.
Its events look like the pipeline's after classification (the classify stage passes
events that already carry a ``content_class``). It also plays the policy and identity
stages, for the dashboard's demo, which has no daemon; the pipeline's source strips
those fields and leaves them to the real stages.

:class:`SyntheticSource` serves a pool of such events at a chosen rate. Generation is
cheap on purpose — a shallow copy of a pooled event each — so that the pipeline
benchmark measures the pipeline, not this generator.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]


@dataclass(frozen=True)
class Provider:
    key: str  # a handle for actors to name it
    name: str  # llm_provider, as the classifier names it
    host: str
    ip: str
    endpoint: str
    models: tuple[str, ...]
    auth_header: str = "authorization"
    port: int = 443


PROVIDERS = {
    p.key: p
    for p in (
        Provider("openai", "OpenAI", "api.openai.com", "162.159.140.245", "/v1/chat/completions",
                 ("gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-4.1")),
        Provider("anthropic", "Anthropic", "api.anthropic.com", "160.79.104.10", "/v1/messages",
                 ("claude-sonnet-4-20250514", "claude-3-5-haiku-20241022",
                  "claude-opus-4-20250514"),
                 auth_header="x-api-key"),
        Provider("google", "Google", "generativelanguage.googleapis.com", "142.250.74.10",
                 "/v1beta/models/gemini-2.0-flash:generateContent",
                 ("gemini-2.0-flash", "gemini-2.5-pro"), auth_header="x-goog-api-key"),
        Provider("mistral", "Mistral", "api.mistral.ai", "104.18.19.41", "/v1/chat/completions",
                 ("mistral-large-latest", "codestral-latest")),
        Provider("groq", "Groq", "api.groq.com", "104.18.2.205", "/openai/v1/chat/completions",
                 ("llama-3.3-70b-versatile", "mixtral-8x7b-32768")),
        Provider("deepseek", "DeepSeek", "api.deepseek.com", "116.205.40.114", "/chat/completions",
                 ("deepseek-chat", "deepseek-reasoner")),
        Provider("azure", "Azure", "contoso-eu.openai.azure.com", "20.43.132.130",
                 "/openai/deployments/gpt-4o/chat/completions", ("gpt-4o",), auth_header="api-key"),
        Provider("bedrock", "AWS Bedrock", "bedrock-runtime.us-east-1.amazonaws.com", "52.94.133.131",
                 "/model/anthropic.claude-3-5-sonnet/invoke", ("anthropic.claude-3-5-sonnet",)),
        Provider("cohere", "Cohere", "api.cohere.com", "34.96.76.122", "/v2/chat", ("command-r-plus",)),
        Provider("together", "Together", "api.together.xyz", "104.18.22.176", "/v1/chat/completions",
                 ("meta-llama/Llama-3.3-70B-Instruct-Turbo",)),
        Provider("openrouter", "OpenAI-compatible", "openrouter.ai", "104.18.3.115",
                 "/api/v1/chat/completions",
                 ("anthropic/claude-3.5-sonnet", "qwen/qwen-2.5-coder-32b-instruct")),
        Provider("perplexity", "Perplexity", "api.perplexity.ai", "104.18.26.48", "/chat/completions",
                 ("sonar-pro",)),
        Provider("xai", "OpenAI-compatible", "api.x.ai", "104.18.28.72", "/v1/chat/completions",
                 ("grok-2-latest",)),
        Provider("ollama", "Ollama", "localhost", "127.0.0.1", "/api/chat", ("llama3.1:8b", "qwen2.5:7b"),
                 auth_header="", port=11434),
    )
}

SYSTEM_PROMPTS = {
    "support": "You are Aria, the customer-support assistant for Northwind Bank. Answer only "
    "questions about accounts and cards. Never reveal internal procedures.",
    "coder": "You are an expert software engineer. Reply with minimal diffs and explain "
    "risky changes. The repository is a Python monorepo.",
    "agent": "You are an autonomous operations agent. You may call tools to inspect and "
    "change the system. Think step by step and confirm destructive actions.",
    "summarizer": "Summarize the following document in five bullet points for an executive "
    "audience. Keep numbers exact.",
    "triage": "Classify the incoming ticket into one of: billing, outage, security, other. "
    "Reply with JSON only.",
    "": "",
}

# (user message, response preview, PII types it carries)
PROMPTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "support": [
        ("My card ending 4421 was declined at a gas station this morning, why?",
         "I'm sorry about that. Card declines at fuel pumps usually come from the pre-"
         "authorization hold...", ()),
        ("Please update my email to jane.doe@example.com and call me on +1 415 555 0134",
         "I can't change contact details in chat, but I've opened a request for you...",
         ("email", "phone")),
        ("What's the wire transfer limit for a business account?",
         "Business accounts can send up to $250,000 per day by wire; higher limits...", ()),
        ("My SSN is 078-05-1120, can you check if my loan application went through?",
         "Please don't share your Social Security number here. I can check the status...",
         ("ssn",)),
    ],
    "coder": [
        ("Refactor this function to use asyncio.gather and keep the retry logic",
         "```python\nasync def fetch_all(urls):\n    return await asyncio.gather(*(fetch(u) "
         "for u in urls))\n```", ()),
        ("Why does this test fail? AWS_SECRET_ACCESS_KEY=wJal*** (from .env.test)",
         "The test reads the key from the environment, but the fixture overrides...",
         ("aws_access_key",)),
        ("Write a regex that validates IBANs", "Here's a pattern that checks the country "
         "code and length, followed by a mod-97 check in code...", ()),
        ("Explain the difference between SSL_write and SSL_write_ex",
         "SSL_write_ex reports the number of bytes written through an out-parameter and "
         "supports writes larger than INT_MAX...", ()),
    ],
    "agent": [
        ("Disk usage on /var is at 93%. Find what is growing and clean it up.",
         "I'll start by listing the largest directories under /var/log...", ()),
        ("Rotate the nginx logs and restart the service if the config test passes",
         "Running `nginx -t` first. Configuration is valid; rotating logs now...", ()),
        ("Deploy release 2.14.1 to the staging cluster", "Checking the image digest "
         "and the rollout status of deployment/web in namespace staging...", ()),
    ],
    "summarizer": [
        ("Q3 board pack: revenue 41.2M (+18% YoY), churn 2.1%, 3 new enterprise logos...",
         "- Revenue grew 18% year over year to $41.2M\n- Churn held at 2.1%...", ()),
        ("Incident report INC-5521: customer emails exposed, contact ops@northwind.example",
         "- Root cause: misconfigured bucket policy\n- 1,204 records affected...", ("email",)),
    ],
    "triage": [
        ("Ticket #88121: 'I was charged twice for my subscription'", '{"category": "billing"}', ()),
        ("Ticket #88122: 'API returns 503 since 09:12 UTC'", '{"category": "outage"}', ()),
        ("Ticket #88123: 'Someone logged into my account from Romania'",
         '{"category": "security"}', ()),
    ],
    "": [
        ("Say hello in one word", "Hello!", ()),
        ("What is 2+2?", "4", ()),
    ],
}

MCP_CALLS = (
    ("tools/call", "read_file", '{"path": "/home/dev/project/README.md"}', "audit"),
    ("tools/call", "search_code", '{"query": "def verify_token"}', "allow"),
    ("tools/call", "run_shell", '{"command": "kubectl get pods -A"}', "audit"),
    ("tools/call", "run_shell", '{"command": "rm -rf /var/lib/postgresql/data"}', "deny"),
    ("tools/list", "", "{}", "allow"),
    ("resources/read", "", '{"uri": "file:///etc/hosts"}', "allow"),
    ("tools/call", "http_fetch", '{"url": "https://pastebin.com/raw/8fK2"}', "audit"),
)


@dataclass
class Actor:
    """One process (and agent identity) the demo plays."""

    process_name: str
    pid: int
    uid: int
    sdk: str
    sdk_version: str
    user_agent: str
    providers: tuple[str, ...]
    persona: str
    weight: float
    stream_ratio: float = 0.5
    mcp: bool = False
    container_id: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    identity_id: int = 0
    conn_ids: itertools.count = field(default_factory=lambda: itertools.count(3))


ACTORS = (
    Actor("python3", 4121, 1000, "openai-python", "1.54.3", "OpenAI/Python 1.54.3",
          ("openai", "azure"), "support", 4.0, stream_ratio=0.7, identity_id=11),
    Actor("python3", 5310, 1000, "anthropic-python", "0.39.0", "Anthropic/Python 0.39.0",
          ("anthropic", "bedrock"), "agent", 3.0, stream_ratio=0.8, identity_id=12),
    Actor("node", 7702, 1001, "openai-node", "4.73.0", "OpenAI/JS 4.73.0",
          ("openai", "groq", "deepseek", "openrouter"), "coder", 3.0, identity_id=13),
    Actor("claude", 8815, 1001, "anthropic-typescript", "0.32.1",
          "claude-cli/1.0.3 (external, cli)",
          ("anthropic",), "coder", 2.5, stream_ratio=1.0, mcp=True, identity_id=14),
    Actor("curl", 9011, 1002, "", "", "curl/7.88.1", ("mistral", "xai", "perplexity"), "", 0.8,
          stream_ratio=0.0, identity_id=15),
    Actor("uvicorn", 2201, 999, "langchain-python", "0.3.7", "langchain/0.3.7 httpx/0.27.2",
          ("google", "cohere", "together", "openai"), "summarizer", 2.0,
          container_id="9f2c4e1b7a3d5e6f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f",
          pod_name="ticket-triage-7d9f8", pod_namespace="support", identity_id=16),
    Actor("python3", 6620, 1000, "ollama-python", "0.4.1", "ollama-python/0.4.1",
          ("ollama",), "triage", 1.5, stream_ratio=0.3, identity_id=17),
    Actor("mcp-inspector", 9377, 1001, "mcp-typescript", "1.0.4", "node", (), "", 1.0,
          mcp=True, identity_id=18),
)


_ROLES = {
    "support": "Customer-support bot",
    "coder": "Coding assistant",
    "agent": "Autonomous ops agent",
    "summarizer": "Document summarizer",
    "triage": "Ticket triage job",
    "": "Ad-hoc script",
}


def _mask(secret: str) -> str:
    return secret[:7] + "…" + "*" * 6 if len(secret) > 10 else "****"


class TrafficGenerator:
    """Deterministic (seeded) source of realistic traffic, request then response."""

    def __init__(self, seed: int = 7, start_seq: int = 1) -> None:
        self._rng = random.Random(seed)
        self._seq = itertools.count(start_seq)
        self._weights = [a.weight for a in ACTORS]
        self._pending: deque[Event] = deque()  # responses waiting for their turn

    def events(self, n: int, now: float | None = None) -> list[Event]:
        """The next ``n`` events, timestamped around ``now``."""
        now = time.time() if now is None else now
        out: list[Event] = []
        while len(out) < n:
            if self._pending and self._rng.random() < 0.5:
                event = self._pending.popleft()
            else:
                event = self._new_request(now)
            event["seq"] = next(self._seq)
            event["timestamp"] = now - 0.001 * (n - len(out)) * self._rng.random()
            out.append(event)
        out.sort(key=lambda e: e["seq"])
        return out

    # --- one conversation -----------------------------------------------------------
    def _new_request(self, now: float) -> Event:
        rng = self._rng
        actor = rng.choices(ACTORS, self._weights)[0]
        if actor.mcp and (not actor.providers or rng.random() < 0.45):
            return self._mcp_request(actor)
        if rng.random() < 0.04:
            return self._dns(actor)
        provider = PROVIDERS[rng.choice(actor.providers)]
        model = rng.choice(provider.models)
        user, preview, pii_types = rng.choice(PROMPTS[actor.persona])
        if pii_types and rng.random() < 0.6:
            # Most conversations are harmless; PII shows up, but not in every other one.
            clean = [p for p in PROMPTS[actor.persona] if not p[2]]
            user, preview, pii_types = rng.choice(clean)
        stream = rng.random() < actor.stream_ratio
        conn_id = next(actor.conn_ids) % 40 + 3
        plaintext = provider.port != 443
        endpoint = provider.endpoint
        if provider.name == "Google" and model != "gemini-2.0-flash":
            endpoint = endpoint.replace("gemini-2.0-flash", model)
        in_tokens = rng.randint(40, 2400)
        out_tokens = rng.randint(8, 900)
        headers = {
            "host": provider.host if not plaintext else f"{provider.host}:{provider.port}",
            "user-agent": actor.user_agent,
            "content-type": "application/json",
        }
        if provider.auth_header:
            key = "sk-proj-" + "".join(rng.choices("abcdefghijkLMNOP0123456789", k=24))
            value = _mask(key)
            headers[provider.auth_header] = (
                "Bearer " + value if provider.auth_header == "authorization" else value
            )
        if actor.sdk.endswith(("-python", "-node", "-typescript")) and actor.sdk.startswith(
            ("openai", "anthropic")
        ):
            headers["x-stainless-lang"] = "python" if "python" in actor.sdk else "js"
            headers["x-stainless-package-version"] = actor.sdk_version
        if provider.name == "Anthropic":
            headers["anthropic-version"] = "2023-06-01"
        decision, reasons = self._decide(actor, provider.name, pii_types, "", "")
        base = self._base(actor, provider, conn_id, plaintext)
        request = {
            **base,
            "event_type": "DATA_WRITE" if plaintext else "TLS_DATA_WRITE",
            "direction": "write",
            "bytes": 380 + len(SYSTEM_PROMPTS[actor.persona]) + len(user) + rng.randint(0, 900),
            "content_class": "LLM_REQUEST",
            "llm_provider": provider.name,
            "llm_endpoint": endpoint,
            "llm_model": model,
            "llm_stream": stream,
            "llm_system_prompt": SYSTEM_PROMPTS[actor.persona],
            "llm_user_message": user,
            "llm_input_tokens": in_tokens,
            "agent_sdk": actor.sdk,
            "agent_sdk_version": actor.sdk_version,
            "classifier_confidence": round(rng.uniform(0.86, 0.99), 2),
            "http_headers": headers,
            "pii_detected": bool(pii_types),
            "pii_types": list(pii_types),
            "policy": decision,
            "policy_reasons": reasons,
        }
        if decision == "deny":
            request["action"] = rng.choice(("would-kill", "blocked"))
        else:
            response = {
                **base,
                "event_type": "DATA_READ" if plaintext else "TLS_DATA_READ",
                "direction": "read",
                "bytes": (rng.randint(2_000, 40_000) if stream else rng.randint(300, 4_000)),
                "content_class": "LLM_RESPONSE",
                "llm_provider": provider.name,
                "llm_endpoint": endpoint,
                "llm_model": model,
                "llm_stream": stream,
                "llm_response_preview": preview,
                "llm_input_tokens": in_tokens,
                "llm_output_tokens": out_tokens,
                "agent_sdk": actor.sdk,
                "agent_sdk_version": actor.sdk_version,
                "classifier_confidence": round(rng.uniform(0.9, 0.99), 2),
                "http_headers": {
                    "content-type": "text/event-stream" if stream else "application/json",
                    "x-request-id": "req_" + "".join(rng.choices("0123456789abcdef", k=20)),
                },
                "pii_detected": False,
                "pii_types": [],
                "policy": "allow",
                "policy_reasons": [],
            }
            self._pending.append(response)
        return request

    def _mcp_request(self, actor: Actor) -> Event:
        rng = self._rng
        method, tool, args, decision = rng.choice(MCP_CALLS)
        reasons = []
        if decision == "deny":
            reasons = [f"mcp-guard: destructive command in {tool} arguments"]
        elif decision == "audit":
            reasons = [f"mcp-guard: tool {tool} touches files, shell or network"]
        conn_id = 900 + actor.pid % 7
        remote = actor.process_name == "claude"
        event = {
            "event_type": "TLS_DATA_WRITE" if remote else "DATA_WRITE",
            "direction": "write",
            "pid": actor.pid,
            "tid": actor.pid,
            "uid": actor.uid,
            "process_name": actor.process_name,
            "src_ip": "127.0.0.1",
            "src_port": 40000 + actor.pid % 20000,
            "dst_ip": "127.0.0.1" if not remote else "104.18.33.45",
            "dst_port": 3000 if not remote else 443,
            "sni": "" if not remote else "mcp.linear.app",
            "provider": "",
            "conn_id": conn_id,
            "bytes": 120 + len(args) + rng.randint(0, 60),
            "content_class": "MCP_REQUEST",
            "llm_endpoint": "/mcp",
            "mcp_method": method,
            "mcp_tool": tool,
            "llm_user_message": f'{{"jsonrpc":"2.0","id":{rng.randint(1, 999)},"method":'
            f'"{method}","params":{{"name":"{tool}","arguments":{args}}}}}',
            "agent_sdk": actor.sdk,
            "agent_sdk_version": actor.sdk_version,
            "classifier_confidence": 0.99,
            "http_headers": {
                "content-type": "application/json",
                "mcp-session-id": "".join(rng.choices("0123456789abcdef", k=16)),
                "authorization": "Bearer " + _mask("mcp_tok_3f9a8b7c6d5e"),
            },
            "policy": decision,
            "policy_reasons": reasons,
            **self._identity(actor, ""),
        }
        if decision == "deny":
            event["action"] = "would-kill"
        return event

    def _dns(self, actor: Actor) -> Event:
        name = PROVIDERS[self._rng.choice(actor.providers or ("openai",))].host
        return {
            "event_type": "DNS_QUERY",
            "pid": actor.pid,
            "tid": actor.pid,
            "uid": actor.uid,
            "process_name": actor.process_name,
            "dst_ip": "127.0.0.53",
            "dst_port": 53,
            "bytes": 40 + len(name),
            "dns_name": name,
            "content_class": "",
            "policy": "",
            **self._identity(actor, ""),
        }

    def _base(self, actor: Actor, provider: Provider, conn_id: int, plaintext: bool) -> Event:
        return {
            "pid": actor.pid,
            "tid": actor.pid + self._rng.randint(0, 3),
            "uid": actor.uid,
            "process_name": actor.process_name,
            "cgroup_id": 4000 + actor.pid % 97,
            "container_id": actor.container_id,
            "pod_name": actor.pod_name,
            "pod_namespace": actor.pod_namespace,
            "src_ip": "127.0.0.1" if plaintext else "10.0.1.5",
            "src_port": 40000 + (actor.pid * 7 + conn_id) % 20000,
            "dst_ip": provider.ip,
            "dst_port": provider.port,
            "sni": "" if plaintext else provider.host,
            "provider": provider.name,
            "conn_id": conn_id,
            **self._identity(actor, provider.name),
        }

    @staticmethod
    def _identity(actor: Actor, provider: str) -> Event:
        via = f" via {actor.sdk} SDK" if actor.sdk else " via raw HTTP"
        where = f" in pod {actor.pod_namespace}/{actor.pod_name}" if actor.pod_name else ""
        family = (actor.sdk or "http").split("-")[0]
        return {
            "identity_id": actor.identity_id,
            "identity_instance": f"{actor.process_name}-{actor.pid}-{family}",
            "identity_confidence": 0.9 if actor.sdk else 0.6,
            "identity_narrative": f"{_ROLES.get(actor.persona, 'MCP client')} "
            f"({actor.process_name}, pid {actor.pid}){via}{where}"
            + (f", talking to {provider}" if provider else ""),
        }

    @staticmethod
    def _decide(
        actor: Actor, provider: str, pii_types: tuple[str, ...], method: str, tool: str
    ) -> tuple[str, list[str]]:
        """A small stand-in for the shipped policies (deny > audit > allow)."""
        deny, audit = [], []
        secrets = [t for t in pii_types if t in ("aws_access_key", "api_key", "private_key")]
        personal = [t for t in pii_types if t not in secrets]
        if secrets:
            deny.append(f"secrets: {', '.join(secrets)} in prompt to {provider}")
        if personal and provider != "Ollama":
            deny.append(f"pii: {', '.join(personal)} sent to external provider {provider}")
        if provider == "Anthropic":
            audit.append("audit-anthropic: all Anthropic traffic is audited")
        if not actor.sdk:
            audit.append("unmanaged-client: request without a known SDK")
        if actor.container_id and provider in ("Together", "OpenAI-compatible"):
            audit.append(f"data-residency: {provider} is not an approved processor")
        if deny:
            return "deny", deny + audit
        if audit:
            return "audit", audit
        return "allow", []


# Fields the real pipeline's stages fill in; the source leaves them to those stages.
_STAGE_FIELDS = ("policy", "policy_reasons", "policy_error", "action", "identity_id",
                 "identity_instance", "identity_confidence", "identity_narrative", "seq")


class SyntheticSource:
    """Produces ``rate`` events per second (0 = as fast as the consumer polls), stopping
    after ``count`` events when ``count`` is set."""

    CHUNK = 512  # most events returned by one poll
    POOL = 4096  # distinct events cycled through

    def __init__(self, rate: float = 50.0, count: int = 0, seed: int = 1,
                 clock=time.monotonic) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = rate
        self.count = count
        self.clock = clock
        self.exhausted = False
        self.produced = 0
        pool = TrafficGenerator(seed=seed).events(self.POOL, now=0.0)
        for event in pool:
            for name in _STAGE_FIELDS:
                event.pop(name, None)
        self._cycle = itertools.cycle(pool)
        self._start = 0.0
        self._last = 0.0

    def start(self) -> None:
        self._start = self._last = self.clock()

    def _due(self, now: float) -> int:
        if self.rate == 0:
            return self.CHUNK
        return int((now - self._start) * self.rate) - self.produced

    def poll(self, timeout_s: float) -> list[Event]:
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
