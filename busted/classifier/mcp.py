"""Model Context Protocol messages: JSON-RPC 2.0 carrying MCP methods.

Only MCP counts: a JSON-RPC request is MCP when its method is one the MCP specification
defines (or the request carries MCP's own HTTP headers); Ethereum ``eth_*``, Bitcoin,
LSP and other JSON-RPC stay plain HTTP. A response is MCP when it answers on an MCP
session (the connection's last request was MCP, or ``Mcp-Session-Id`` is present) or
its result has MCP's shape (``protocolVersion`` + ``capabilities``, ``tools`` with
``inputSchema``, ``content`` blocks, ...).
"""

from __future__ import annotations

from typing import Any

METHODS = frozenset(
    (
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "sampling/createMessage",
        "roots/list",
        "elicitation/create",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    )
)
_RESULT_KEYS = frozenset(
    (
        "protocolVersion",
        "serverInfo",
        "tools",
        "resources",
        "resourceTemplates",
        "prompts",
        "contents",
        "isError",
        "structuredContent",
    )
)


def is_mcp_method(method: Any) -> bool:
    return isinstance(method, str) and (method in METHODS or method.startswith("notifications/"))


def _first(obj: Any) -> Any:
    """A JSON-RPC batch is a list: its first element speaks for it."""
    if isinstance(obj, list) and obj:
        return obj[0]
    return obj


def request_fields(obj: Any, mcp_headers: bool = False) -> dict[str, Any] | None:
    """MCP fields of a JSON-RPC request body, or None if it is not MCP."""
    msg = _first(obj)
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return None
    method = msg.get("method")
    if not isinstance(method, str):
        return None
    if not (is_mcp_method(method) or mcp_headers):
        return None
    fields: dict[str, Any] = {"mcp_method": method}
    params = msg.get("params")
    if method == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
        fields["mcp_tool"] = params["name"]
    return fields


def response_fields(obj: Any, on_mcp_session: bool = False) -> dict[str, Any] | None:
    """MCP fields of a JSON-RPC response body (or a server-sent request/notification)."""
    msg = _first(obj)
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return None
    method = msg.get("method")
    if isinstance(method, str):  # server -> client request or notification
        return request_fields(msg, on_mcp_session)
    if "result" not in msg and "error" not in msg:
        return None
    result = msg.get("result")
    method = _method_of_result(result)
    fields = {"mcp_method": method} if method else {}
    if on_mcp_session or method:
        return fields
    if isinstance(result, dict) and _RESULT_KEYS.intersection(result):
        return fields
    return None


def _method_of_result(result: Any) -> str | None:
    """The request a result answers, read from its shape (a response has no method)."""
    if not isinstance(result, dict):
        return None
    if "protocolVersion" in result and "capabilities" in result:
        return "initialize"
    if isinstance(result.get("tools"), list):
        return "tools/list"
    if isinstance(result.get("resources"), list):
        return "resources/list"
    if isinstance(result.get("resourceTemplates"), list):
        return "resources/templates/list"
    if isinstance(result.get("contents"), list):
        return "resources/read"
    if isinstance(result.get("prompts"), list):
        return "prompts/list"
    if isinstance(result.get("messages"), list) and "description" in result:
        return "prompts/get"
    content = result.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict) and "type" in content[0]:
        return "tools/call"
    return None
