# MCP: deny calls of dangerous tools (shell, exec, file-write style, or listed by
# name), audit every other MCP message.
#
# Input: content_class, mcp_method, mcp_tool.
# Settings: busted_config.dangerous_mcp_tools (exact names),
# busted_config.dangerous_mcp_tool_words (a tool whose name contains one is dangerous).
package busted

import rego.v1

import data.busted.lib

mcp_dangerous_call if {
	input.content_class == "MCP_REQUEST"
	input.mcp_method == "tools/call"
	lib.dangerous_tool(input.mcp_tool)
}

deny contains msg if {
	mcp_dangerous_call
	msg := sprintf("mcp: dangerous tool call %s", [input.mcp_tool])
}

audit contains msg if {
	startswith(input.content_class, "MCP_")
	not mcp_dangerous_call
	msg := sprintf("mcp: %s audited", [mcp_method_label])
}

mcp_method_label := input.mcp_method if {
	input.mcp_method != ""
} else := "message"
