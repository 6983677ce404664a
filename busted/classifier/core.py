"""The classifier proper: from one message (or one raw capture) to event fields.

:func:`classify_message` judges a whole HTTP message (HTTP/1.x, or rebuilt from an
HTTP/2 stream), :func:`classify_raw` judges bytes that are not HTTP (a bare JSON body,
an SSE continuation, junk). Both take a :class:`ConnContext` that remembers what the
connection said before (host, provider, the last request), so a response is judged in
the light of the request it answers. Neither raises; :func:`busted.classifier.classify`
wraps them for one standalone capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from busted.classifier import eventstream, jsonparse, llm, locate, mcp, pii, providers, redact, sdk, sse
from busted.classifier.body import decode_content, to_text
from busted.classifier.http1 import HttpMessage

MAX_PAYLOAD_TEXT = 256 * 1024  # characters of tls_payload kept per event
MAX_SCAN = pii.MAX_SCAN  # bytes of content scanned for PII and secrets


@dataclass
class ConnContext:
    """What one connection has told us so far (shared by both directions)."""

    sni: str = ""
    dst_ip: str = ""
    dst_port: int = 0
    host: str = ""  # from the last request's Host / :authority
    provider: str | None = None  # provider of the last LLM request
    endpoint: str = ""
    model: str = ""
    stream: bool | None = None
    mcp: bool = False  # the last request was MCP (responses on it are MCP)
    mcp_method: str = ""
    requests: int = 0
    http2: bool = False
    # HTTP/2: what each stream's request said, so its response is judged by it.
    streams: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    # a busted.classifier.websocket.Session once an Upgrade: websocket request was seen
    websocket: Any = None


def parse_json(data: bytes | str) -> Any:
    """The JSON value of a body, or None (invalid, truncated, too deep)."""
    if not data:
        return None
    head = data[:1] if isinstance(data, str) else data[:1].decode("latin-1")
    if head not in "{[":
        data = data.strip()
        if not data or (data[:1] if isinstance(data, str) else data[:1].decode("latin-1")) not in "{[":
            return None
    return jsonparse.loads(data)


class _Body:
    """A message body decoded once, with the scans both PII detection and masking use."""

    __slots__ = ("data", "tokens", "mapped", "masked", "secrets", "text", "binary")

    def __init__(self, data: bytes, binary: bool = False) -> None:
        self.data = data
        self.binary = binary  # a file, image or archive: nobody's prompt, no PII scan
        scanned = data[:MAX_SCAN]
        self.mapped = locate.classes(scanned)
        self.tokens = locate.token_windows(scanned, mapped=self.mapped) if scanned else []
        masked, self.secrets = redact.mask_bytes(data, self.tokens if len(data) <= MAX_SCAN else None)
        self.text = to_text(data) if data else ""
        self.masked = to_text(masked[:MAX_PAYLOAD_TEXT]) if self.secrets else self.text[:MAX_PAYLOAD_TEXT]

    def pii(self) -> dict[str, Any]:
        # Binary bodies are skipped: digit-heavy ones cost ~100 ms per 256 KiB to scan
        # and hold no prompt.
        types = pii.scan(self.data[:MAX_SCAN], self.tokens, self.mapped) \
            if self.data and not self.binary else []
        return {"pii_detected": bool(types), "pii_types": types}


def _headers_out(msg: HttpMessage) -> tuple[dict[str, str], str]:
    """(``http_headers`` for the event, the header part of ``tls_payload``), secrets masked."""
    index = msg.header_index()
    secret = redact.secret_names(index.keys())
    shown = dict(index)
    for name in secret:
        shown[name] = redact.mask_header_value(name, index[name])
    if msg.kind == "request":
        target = redact.mask_text(msg.target) if "=" in msg.target else msg.target
        start = f"{msg.method} {target} {msg.version}"
    else:
        start = f"{msg.version} {msg.status} {msg.reason}".rstrip()
    if msg.head_text:
        head = msg.head_text
        for name in secret:
            joined = index[name]
            if joined and joined in head:
                head = head.replace(joined, shown[name])
            else:  # repeated header: mask each occurrence
                for raw_name, value in msg.headers:
                    if value and raw_name.lower() == name:
                        head = head.replace(value, redact.mask_header_value(name, value))
        return shown, f"{start}\r\n{head}"
    lines = [start]
    lines.extend(f"{name}: {redact.mask_header_value(name, value)}" for name, value in msg.headers)
    return shown, "\r\n".join(lines)


def _mask_fields(fields: dict[str, Any]) -> None:
    for key in ("llm_user_message", "llm_system_prompt", "llm_response_preview"):
        value = fields.get(key)
        if value:
            fields[key] = redact.mask_text(value)


def _headers_hint(h: dict[str, str]) -> str | None:
    if "anthropic-version" in h or "anthropic-beta" in h:
        return "anthropic"
    if "openai-organization" in h or "openai-project" in h or "x-stainless-lang" in h:
        return "openai"
    return None


def _split_target(target: str) -> tuple[str, str]:
    """(host from an absolute-form target, path without query)."""
    host = ""
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        host, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    path = target.split("?", 1)[0].split("#", 1)[0]
    return host, path


# Content types that carry files or media, never a prompt.
_BINARY_TYPES = ("application/octet-stream", "image/", "audio/", "video/", "font/",
                 "application/zip", "application/gzip", "application/x-tar",
                 "application/pdf", "application/grpc")


def classify_message(msg: HttpMessage, ctx: ConnContext | None = None) -> dict[str, Any]:
    """Fields of one HTTP message (request or response)."""
    ctx = ctx or ConnContext()
    index = msg.header_index()
    encoding = index.get("content-encoding")
    ctype = (index.get("content-type") or "").lower()
    body = _Body(decode_content(msg.body, encoding) if encoding else msg.body,
                 binary=ctype.startswith(_BINARY_TYPES) or "protobuf" in ctype)
    judge = _request if msg.kind == "request" else _response
    fields = judge(msg, body, ctx)
    if body.secrets:
        _mask_fields(fields)
    fields["http_headers"], head = _headers_out(msg)
    fields["tls_payload"] = (head + "\r\n\r\n" + body.masked)[:MAX_PAYLOAD_TEXT]
    return fields


def _request(msg: HttpMessage, body_: _Body, ctx: ConnContext) -> dict[str, Any]:
    h = msg.header_index()
    abs_host, path = _split_target(msg.target)
    host_header = h.get("host") or h.get(":authority") or abs_host
    host, host_port = providers.split_host(host_header)
    sni = ctx.sni.lower()
    # SNI names the server the TLS session was made with; trust it over a Host header.
    name = sni or host
    port = ctx.dst_port or host_port
    ctx.requests += 1
    body = body_.data
    ctx.host = name
    ctype = (h.get("content-type") or "").lower()
    obj = parse_json(body) if body and ("json" in ctype or not ctype or body[:1] in b"{[") else None
    salvaged = None
    if obj is None and body and body.lstrip()[:1] == b"{":
        salvaged = llm.salvage(to_text(body[:MAX_SCAN]))  # cut short by capture limits
    fields: dict[str, Any] = {}
    agent, version = sdk.detect(h.get)
    if agent:
        fields["agent_sdk"] = agent
        if version:
            fields["agent_sdk_version"] = version

    mcp_headers = "mcp-session-id" in h or "mcp-protocol-version" in h
    mcp_fields = mcp.request_fields(obj, mcp_headers) if obj is not None else None
    if mcp_fields is not None:
        ctx.mcp = True
        ctx.mcp_method = mcp_fields["mcp_method"]
        ctx.provider = None
        fields.update(mcp_fields)
        fields["content_class"] = "MCP_REQUEST"
        fields["classifier_confidence"] = 0.95 if mcp.is_mcp_method(mcp_fields["mcp_method"]) else 0.8
        fields.update(body_.pii())
        return fields
    ctx.mcp = mcp_headers or path.rstrip("/").endswith(("/mcp", "/sse"))

    provider, confidence = (None, 0.0)
    if msg.method in ("POST", "GET", "PUT", "DELETE", "PATCH") or not msg.method:
        shape_obj = obj if obj is not None else salvaged
        provider, confidence = providers.detect(name, port, path, shape_obj, _headers_hint(h))
        if (
            provider
            and msg.method != "POST"
            and providers.provider_for_host(name) is None
            and port != providers.OLLAMA_PORT
        ):
            provider = None  # shape-only evidence needs a POST (an S3 PUT named like an API is not one)
    if provider is None:
        ctx.provider = None
        fields["content_class"] = "HTTP_REQUEST"
        fields["classifier_confidence"] = 0.9 if msg.method else 0.5
        fields.update(body_.pii())
        return fields

    fields["content_class"] = "LLM_REQUEST"
    fields["llm_provider"] = provider
    fields["llm_endpoint"] = path
    if obj is not None:
        confidence = min(1.0, confidence + 0.04)
    elif body and salvaged is None:
        confidence -= 0.15  # a provider host, but a body we cannot read
    fields["classifier_confidence"] = round(confidence, 2)
    fields.update(llm.extract_request(obj if obj is not None else salvaged, path))
    if "llm_stream" not in fields and "text/event-stream" in (h.get("accept") or ""):
        fields["llm_stream"] = True
    ctx.provider = provider
    ctx.endpoint = path
    ctx.model = fields.get("llm_model", "")
    ctx.stream = fields.get("llm_stream")
    fields.update(body_.pii())
    return fields


def _response(msg: HttpMessage, body: _Body, ctx: ConnContext) -> dict[str, Any]:
    body_text = body.text
    ctype = (msg.header("content-type") or "").lower()
    fields: dict[str, Any] = {}
    acc = llm.ResponseAccumulator()
    mcp_session = ctx.mcp or bool(msg.header("mcp-session-id"))
    mcp_fields: dict[str, Any] | None = None
    obj: Any = None
    binary_stream = "eventstream" in ctype  # AWS event-stream (Bedrock), not SSE
    streamed = (
        binary_stream
        or "event-stream" in ctype
        or "ndjson" in ctype
        or (not ctype and sse.looks_like_sse(body_text))
    )
    if streamed:

        def want(data: str) -> bool:
            # Once the preview is full and the model known, only totals matter.
            return acc.size < llm.PREVIEW_LIMIT or acc.model is None or "sage" in data or "_count" in data

        if binary_stream:
            events = eventstream.iter_eventstream(body.data)
        elif "ndjson" in ctype:
            events = sse.iter_ndjson(body_text)
        else:
            events = sse.iter_sse(body_text, want)
        first = True
        for event, item in events:
            if first:  # an MCP stream says so in its first message
                first = False
                mcp_fields = mcp.response_fields(item, mcp_session)
                if mcp_fields is not None:
                    obj = item
                    break
            acc.add(item, event)
        fields["llm_stream"] = True
    else:
        if body_text and ("json" in ctype or not ctype or body_text[:1] in "{["):
            obj = parse_json(body_text)
        if obj is None and sse.looks_like_ndjson(body_text):
            for event, item in sse.iter_ndjson(body_text):
                acc.add(item, event)
        elif obj is not None:
            mcp_fields = mcp.response_fields(obj, mcp_session)
            if mcp_fields is None:
                acc.add(obj)
    pii_fields = body.pii()

    if mcp_fields is not None:
        fields.update(mcp_fields)
        if ctx.mcp_method and "mcp_method" not in fields:  # the request it answers
            fields["mcp_method"] = ctx.mcp_method
        fields["content_class"] = "MCP_RESPONSE"
        fields["classifier_confidence"] = 0.9 if mcp_session else 0.7
        fields.update(pii_fields)
        return fields

    provider = providers.provider_for_host(ctx.sni) or ctx.provider
    if provider is None and ctx.dst_port == providers.OLLAMA_PORT:
        provider = "Ollama"
    confidence = 0.9 if provider else 0.0
    if provider is None and acc.seen and acc.shape:
        provider = llm.SHAPE_PROVIDER.get(acc.shape)
        confidence = 0.7
    if provider is None:
        fields["content_class"] = "HTTP_RESPONSE"
        fields["classifier_confidence"] = 0.9 if msg.status else 0.5
        fields.update(pii_fields)
        return fields
    fields["content_class"] = "LLM_RESPONSE"
    fields["llm_provider"] = provider
    if acc.seen:
        confidence = min(1.0, confidence + 0.05)
    fields["classifier_confidence"] = round(confidence, 2)
    if ctx.endpoint:
        fields["llm_endpoint"] = ctx.endpoint
    if ctx.model:
        fields["llm_model"] = ctx.model
    if ctx.stream is not None and "llm_stream" not in fields:
        fields["llm_stream"] = ctx.stream
    fields.update(acc.fields())
    _bedrock_usage(msg, fields)
    fields.update(pii_fields)
    return fields


def _bedrock_usage(msg: HttpMessage, fields: dict[str, Any]) -> None:
    for header, key in (
        ("x-amzn-bedrock-input-token-count", "llm_input_tokens"),
        ("x-amzn-bedrock-output-token-count", "llm_output_tokens"),
    ):
        value = msg.header(header)
        if value and value.isascii() and value.isdigit() and key not in fields:
            fields[key] = int(value)


def classify_raw(data: bytes, direction: str, ctx: ConnContext | None = None) -> dict[str, Any]:
    """Fields of bytes that are not an HTTP message: a bare JSON body (request bodies
    written apart from their headers), an SSE / NDJSON continuation, or anything else."""
    ctx = ctx or ConnContext()
    body = _Body(data[:MAX_PAYLOAD_TEXT])
    stripped = body.text.lstrip()
    fields: dict[str, Any] = {"content_class": "UNKNOWN", "classifier_confidence": 0.0}
    if stripped[:1] in ("{", "[") or sse.looks_like_sse(stripped):
        synthetic = HttpMessage(kind="request" if direction == "write" else "response", body=data)
        judged = _request(synthetic, body, ctx) if direction == "write" else _response(synthetic, body, ctx)
        if judged.get("content_class") not in ("HTTP_REQUEST", "HTTP_RESPONSE"):
            fields = judged
            fields["classifier_confidence"] = round(min(fields.get("classifier_confidence", 0.5), 0.8), 2)
        else:
            fields.update({k: v for k, v in judged.items() if k.startswith("pii_")})
    elif body.text and _mostly_printable(body.text):
        # Free text can still leak: scan printable captures (not TLS records or binary).
        fields.update(body.pii())
    if body.secrets:
        _mask_fields(fields)
    fields["tls_payload"] = body.masked
    return fields


def _mostly_printable(text: str) -> bool:
    sample = text[:512]
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ch < " " and ch not in "\r\n\t"))
    return bad * 10 < len(sample)
