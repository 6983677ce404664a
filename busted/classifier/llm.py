"""LLM request and response fields from parsed JSON bodies, for every public API shape.

Requests: model, stream flag, system prompt and the last user turn's text, whatever the
shape (OpenAI chat / completions / Responses, Anthropic messages and legacy complete,
Gemini ``contents``/``parts``, Ollama ``prompt``/``messages``, Cohere ``message``/
``preamble``, Bedrock Converse and native model bodies, Hugging Face ``inputs``).
Responses (whole bodies and stream chunks alike): model, answer text, token usage, fed
into a :class:`ResponseAccumulator` so SSE / NDJSON streams add up.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

TEXT_LIMIT = 4096  # characters kept of a prompt / system prompt
PREVIEW_LIMIT = 512  # characters kept of an answer

_MODEL_IN_PATH = (
    re.compile(r"/models/([^/:]+):"),  # Gemini and Vertex (…/publishers/*/models/M:method)
    re.compile(r"^/model/([^/]+)/"),  # Bedrock
    re.compile(r"/hf-inference/models/(.+?)(?:/pipeline/[^/]+|/v1/.*)?$"),  # HF router
    re.compile(r"^/models/(.+?)(?:/pipeline/[^/]+)?$"),  # HF Inference API
    re.compile(r"/openai/deployments/([^/]+)/"),  # Azure deployment name
)


def model_from_path(path: str) -> str | None:
    for pattern in _MODEL_IN_PATH:
        found = pattern.search(path)
        if found:
            return unquote(found.group(1))
    return None


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit]


def content_text(content: Any) -> str:
    """Text of a message ``content`` in any shape: a string, a list of blocks
    (``text``, ``input_text``, ``output_text``, ``tool_result`` ...), Gemini parts,
    Converse blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        if isinstance(content.get("text"), str):
            return content["text"]
        for key in ("parts", "content"):
            if key in content:
                return content_text(content[key])
        return ""
    if isinstance(content, list):
        texts = []
        for block in content:
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, dict):
                text = block.get("text")
                if isinstance(text, str):
                    texts.append(text)
                elif block.get("type") == "tool_result" or "content" in block:
                    inner = content_text(block.get("content"))
                    if inner:
                        texts.append(inner)
        return "\n".join(texts)
    return ""


# Context agents add to the user's turn, which is not what the user typed: Claude Code's
# <system-reminder> blocks, Gemini CLI's <session_context>. Left out of
# llm_user_message (the whole body still reaches policies as tls_payload).
_AGENT_CONTEXT = re.compile(
    r"<(system-reminder|session_context)>.*?</\1>\s*", re.S)


def without_agent_context(text: str) -> str:
    """The user's own words: agent-added context blocks removed (unless that is all)."""
    if "<" not in text:
        return text
    own = _AGENT_CONTEXT.sub("", text).strip()
    return own or text


def _last_user_message(messages: list[Any]) -> str | None:
    for message in reversed(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("user", "human", "USER") or (
            role is None and ("parts" in message or "content" in message)
        ):
            if "parts" in message:
                return without_agent_context(content_text(message["parts"]))
            return without_agent_context(content_text(message.get("content")))
    return None


def _system_from_messages(messages: list[Any]) -> str | None:
    texts = [
        content_text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    texts = [t for t in texts if t]
    return "\n".join(texts) if texts else None


_HUMAN_TURN = re.compile(r"\n\nHuman:(.*?)(?=\n\nAssistant:|\Z)", re.S)


def extract_request(obj: Any, path: str = "") -> dict[str, Any]:
    """LLM fields of a request body (already parsed JSON) and its path."""
    fields: dict[str, Any] = {}
    model = None
    if isinstance(obj, dict):
        model = obj.get("model") or obj.get("modelId")
    if not isinstance(model, str) or not model:
        model = model_from_path(path) if path else None
    if model:
        fields["llm_model"] = model
    stream = _stream_flag(obj, path)
    if stream is not None:
        fields["llm_stream"] = stream
    if not isinstance(obj, dict):
        if isinstance(obj, list) and obj and isinstance(obj[0], str):
            fields["llm_user_message"] = _clip(obj[-1])
        return fields
    system, user = _prompts(obj)
    if system:
        fields["llm_system_prompt"] = _clip(system)
    if user:
        fields["llm_user_message"] = _clip(user)
    return fields


def _stream_flag(obj: Any, path: str) -> bool | None:
    if path and (
        ":streamGenerateContent" in path
        or path.endswith(("/invoke-with-response-stream", "/converse-stream", ":streamRawPredict"))
    ):
        return True
    if isinstance(obj, dict):
        value = obj.get("stream")
        if isinstance(value, bool):
            return value
        # Ollama streams unless told not to.
        return path in ("/api/chat", "/api/generate")
    return None


def _prompts(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    """(system prompt, last user text) of a request body of any known shape."""
    system: str | None = None
    user: str | None = None
    # System prompt: Anthropic / Bedrock Converse / Ollama generate / Responses / Gemini / Cohere v1.
    for key in ("system", "instructions", "preamble"):
        value = obj.get(key)
        if value:
            system = content_text(value)
            break
    if system is None:
        si = obj.get("systemInstruction") or obj.get("system_instruction")
        if si:
            system = content_text(si)
    messages = obj.get("messages")
    if isinstance(messages, list):
        user = _last_user_message(messages)
        if system is None:
            system = _system_from_messages(messages)
    elif isinstance(obj.get("contents"), list):
        user = _last_user_message(obj["contents"])
    elif "input" in obj:
        user = _responses_input(obj["input"])
    if user is None:
        for key in ("prompt", "message", "inputText", "inputs", "query", "text"):
            value = obj.get(key)
            if isinstance(value, str):
                user = value
                if key == "prompt" and "\n\nHuman:" in value:  # Anthropic legacy complete
                    turns = _HUMAN_TURN.findall(value)
                    if turns:
                        user = turns[-1].strip()
                break
            if isinstance(value, list) and value and isinstance(value[-1], str):
                user = value[-1]
                break
            if isinstance(value, dict):  # HF {"inputs": {"text": ...}}
                user = content_text(value) or None
                break
    return system, user


def _responses_input(value: Any) -> str | None:
    """OpenAI Responses ``input``: a string or a list of items."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return value[-1]  # embeddings input list
        for item in reversed(value):
            if (
                isinstance(item, dict)
                and item.get("role", "user") == "user"
                and (item.get("type") in (None, "message"))
            ):
                return content_text(item.get("content"))
    return None


# --- responses --------------------------------------------------------------------------


class ResponseAccumulator:
    """Adds up what a response says: a whole JSON body, or the chunks of a stream."""

    __slots__ = ("model", "parts", "size", "input_tokens", "output_tokens", "shape", "seen")

    def __init__(self) -> None:
        self.model: str | None = None
        self.parts: list[str] = []
        self.size = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.shape: str | None = None  # "openai", "anthropic", "gemini", "ollama", "cohere", "bedrock"
        self.seen = 0  # chunks that looked like an LLM response

    def text(self, piece: Any) -> None:
        if isinstance(piece, str) and piece and self.size < PREVIEW_LIMIT:
            self.parts.append(piece)
            self.size += len(piece)

    def tokens(self, inp: Any, out: Any) -> None:
        if isinstance(inp, int) and not isinstance(inp, bool):
            self.input_tokens = inp
        if isinstance(out, int) and not isinstance(out, bool):
            self.output_tokens = out

    @property
    def preview(self) -> str:
        return "".join(self.parts)[:PREVIEW_LIMIT]

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.model:
            fields["llm_model"] = self.model
        if self.parts:
            fields["llm_response_preview"] = self.preview
        if self.input_tokens is not None:
            fields["llm_input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            fields["llm_output_tokens"] = self.output_tokens
        return fields

    def add(self, obj: Any, event: str = "") -> bool:
        """Take one JSON object; True if it looked like an LLM response (or chunk)."""
        if isinstance(obj, list):  # HF text-generation: [{"generated_text": ...}]
            if obj and isinstance(obj[0], dict) and "generated_text" in obj[0]:
                self.text(obj[0]["generated_text"])
                self.shape = self.shape or "huggingface"
                self.seen += 1
                return True
            return False
        if not isinstance(obj, dict):
            return False
        metrics = obj.get("amazon-bedrock-invocationMetrics")  # last chunk of a Bedrock stream
        if isinstance(metrics, dict):
            self.tokens(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"))
        # A stream keeps its shape: try the one seen first (streams have many chunks).
        if self.shape is not None:
            handler = getattr(self, "_" + self.shape, None)
            if handler is not None and (handler(obj, event) if self.shape == "anthropic" else handler(obj)):
                self.seen += 1
                return True
        hit = (
            self._openai(obj)
            or self._anthropic(obj, event)
            or self._gemini(obj)
            or self._ollama(obj)
            or self._cohere(obj)
            or self._bedrock(obj)
        )
        if hit:
            self.seen += 1
        return hit

    def _set_model(self, value: Any) -> None:
        if isinstance(value, str) and value and not self.model:
            self.model = value

    def _openai(self, obj: dict[str, Any]) -> bool:
        kind = obj.get("object")
        choices = obj.get("choices")
        if isinstance(choices, list) and (
            kind in ("chat.completion", "chat.completion.chunk", "text_completion") or "model" in obj
        ):
            self.shape = self.shape or "openai"
            self._set_model(obj.get("model"))
            for choice in choices[:1]:
                if isinstance(choice, dict):
                    delta = choice.get("delta") or choice.get("message")
                    if isinstance(delta, dict):
                        self.text(content_text(delta.get("content")))
                    else:
                        self.text(choice.get("text"))
            self._openai_usage(obj.get("usage"))
            return True
        if kind == "response" or (isinstance(obj.get("type"), str) and obj["type"].startswith("response.")):
            self.shape = self.shape or "openai"
            response = obj.get("response") if isinstance(obj.get("response"), dict) else obj
            self._set_model(response.get("model"))
            if obj.get("type") == "response.output_text.delta":
                self.text(obj.get("delta"))
            elif kind == "response":
                for item in response.get("output") or []:
                    if isinstance(item, dict) and item.get("type") == "message":
                        self.text(content_text(item.get("content")))
            self._openai_usage(response.get("usage"))
            return True
        if kind == "list" and isinstance(obj.get("data"), list) and "model" in obj:
            self.shape = self.shape or "openai"  # embeddings
            self._set_model(obj.get("model"))
            self._openai_usage(obj.get("usage"))
            return True
        return False

    def _openai_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            if "prompt_tokens" in usage:
                self.tokens(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            else:
                self.tokens(usage.get("input_tokens"), usage.get("output_tokens"))

    def _anthropic(self, obj: dict[str, Any], event: str) -> bool:
        kind = obj.get("type") or event
        if kind == "message" and obj.get("role") == "assistant":
            self.shape = self.shape or "anthropic"
            self._set_model(obj.get("model"))
            self.text(content_text(obj.get("content")))
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.tokens(usage.get("input_tokens"), usage.get("output_tokens"))
            return True
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            self.shape = self.shape or "anthropic"
            message = obj["message"]
            self._set_model(message.get("model"))
            usage = message.get("usage")
            if isinstance(usage, dict):
                self.tokens(usage.get("input_tokens"), usage.get("output_tokens"))
            return True
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                self.text(delta.get("text"))
            return True
        if kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.tokens(usage.get("input_tokens"), usage.get("output_tokens"))
            return True
        if kind in ("content_block_start", "content_block_stop", "message_stop", "ping"):
            return self.shape == "anthropic" or kind != "ping"
        return False

    def _gemini(self, obj: dict[str, Any]) -> bool:
        candidates = obj.get("candidates")
        usage = obj.get("usageMetadata")
        if not isinstance(candidates, list) and not isinstance(usage, dict):
            return False
        self.shape = self.shape or "gemini"
        self._set_model(obj.get("modelVersion"))
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            self.text(content_text(candidates[0].get("content")))
        if isinstance(usage, dict):
            self.tokens(usage.get("promptTokenCount"), usage.get("candidatesTokenCount"))
        return True

    def _ollama(self, obj: dict[str, Any]) -> bool:
        if "done" not in obj or "model" not in obj:
            return False
        self.shape = self.shape or "ollama"
        self._set_model(obj.get("model"))
        message = obj.get("message")
        if isinstance(message, dict):
            self.text(message.get("content"))
        else:
            self.text(obj.get("response"))
        if obj.get("done"):
            self.tokens(obj.get("prompt_eval_count"), obj.get("eval_count"))
        return True

    def _cohere(self, obj: dict[str, Any]) -> bool:
        kind = obj.get("type") or obj.get("event_type")
        if "generation_id" in obj or "response_id" in obj or "finish_reason" in obj and "message" in obj:
            self.shape = self.shape or "cohere"
            message = obj.get("message")
            self.text(obj.get("text") if "text" in obj else content_text(message))
            self._cohere_usage(obj)
            return True
        if isinstance(kind, str) and kind in (
            "content-delta",
            "message-end",
            "message-start",
            "text-generation",
            "stream-end",
        ):
            self.shape = self.shape or "cohere"
            delta = obj.get("delta")
            if isinstance(delta, dict):
                message = delta.get("message")
                if isinstance(message, dict):
                    self.text(content_text(message.get("content")))
                self._cohere_usage(delta)
            self.text(obj.get("text"))
            return True
        return False

    def _cohere_usage(self, obj: dict[str, Any]) -> None:
        for holder in (obj.get("usage"), obj.get("meta")):
            if isinstance(holder, dict):
                for key in ("tokens", "billed_units"):
                    units = holder.get(key)
                    if isinstance(units, dict):
                        self.tokens(units.get("input_tokens"), units.get("output_tokens"))
                        return

    def _bedrock(self, obj: dict[str, Any]) -> bool:
        output = obj.get("output")
        if isinstance(output, dict) and isinstance(output.get("message"), dict) or "stopReason" in obj:
            self.shape = self.shape or "bedrock"
            message = output.get("message") if isinstance(output, dict) else None
            if isinstance(message, dict):
                self.text(content_text(message.get("content")))
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.tokens(usage.get("inputTokens"), usage.get("outputTokens"))
            return True
        if "contentBlockDelta" in obj or "metadata" in obj and "usage" in (obj.get("metadata") or {}):
            self.shape = self.shape or "bedrock"
            block = obj.get("contentBlockDelta")
            if isinstance(block, dict) and isinstance(block.get("delta"), dict):
                self.text(block["delta"].get("text"))
            meta = obj.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("usage"), dict):
                self.tokens(meta["usage"].get("inputTokens"), meta["usage"].get("outputTokens"))
            return True
        return False


SHAPE_PROVIDER = {
    "openai": "OpenAI-compatible",
    "anthropic": "Anthropic-compatible",
    "gemini": "Google",
    "ollama": "Ollama",
    "cohere": "Cohere",
    "bedrock": "AWS Bedrock",
    "huggingface": "HuggingFace",
}


# --- truncated bodies -------------------------------------------------------------------

_JSON_STR = r'"((?:[^"\\]|\\.)*)'  # a JSON string body, possibly cut before its closing quote
_SALVAGE_MODEL = re.compile(r'"(?:model|modelId)"\s*:\s*' + _JSON_STR + '"')
_SALVAGE_STREAM = re.compile(r'"stream"\s*:\s*(true|false)')
_SALVAGE_SYSTEM = re.compile(
    r'(?:"system"\s*:\s*(?:\[\s*\{[^{}]*?"text"\s*:\s*)?|"role"\s*:\s*"(?:system|developer)"\s*,\s*"content"\s*:\s*)'
    + _JSON_STR
)
_SALVAGE_USER = re.compile(
    r'"role"\s*:\s*"user"\s*,\s*"(?:content|parts)"\s*:\s*(?:\[\s*\{[^{}]*?"text"\s*:\s*)?' + _JSON_STR
)
_SALVAGE_PROMPT = re.compile(r'"(?:prompt|input|inputText|inputs|message)"\s*:\s*' + _JSON_STR)


def _unescape(raw: str) -> str:
    try:
        return json.loads('"' + raw + '"')
    except ValueError:
        cut = raw.rfind("\\")  # an escape cut in half at the end
        try:
            return json.loads('"' + raw[:cut] + '"') if cut >= 0 else raw
        except ValueError:
            return raw


def salvage(text: str) -> dict[str, Any] | None:
    """A stand-in for a JSON request body that was cut short (capture limits): the
    fields we care about, found by pattern, shaped like the body they came from."""
    if not text or text.lstrip()[:1] != "{":
        return None
    obj: dict[str, Any] = {}
    found = _SALVAGE_MODEL.search(text)
    if found:
        obj["model"] = _unescape(found.group(1))
    found = _SALVAGE_STREAM.search(text)
    if found:
        obj["stream"] = found.group(1) == "true"
    system = _SALVAGE_SYSTEM.search(text)
    users = _SALVAGE_USER.findall(text)
    if '"messages"' in text or '"contents"' in text:
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": _unescape(system.group(1))})
        if users:
            messages.append({"role": "user", "content": _unescape(users[-1])})
        obj["contents" if '"contents"' in text and '"messages"' not in text else "messages"] = messages
    else:
        prompt = _SALVAGE_PROMPT.search(text)
        if prompt:
            obj["prompt"] = _unescape(prompt.group(1))
    if '"max_tokens"' in text:
        obj["max_tokens"] = 0
    if '"anthropic_version"' in text:
        obj["anthropic_version"] = ""
    return obj or None
