package busted

import rego.v1

call(tool) := {"content_class": "MCP_REQUEST", "mcp_method": "tools/call", "mcp_tool": tool}

test_shell_tool_is_denied if {
	decision == "deny" with input as call("run_shell_command")
}

test_file_write_tools_are_denied if {
	decision == "deny" with input as call("writeFile")
	decision == "deny" with input as call("fs.delete_file")
	decision == "deny" with input as call("Bash")
}

test_listed_name_is_denied if {
	"mcp: dangerous tool call sudo" in deny with input as call("sudo")
}

test_other_tool_calls_are_audited if {
	decision == "audit" with input as call("search_docs")
	"mcp: tools/call audited" in audit with input as call("search_docs")
}

test_other_mcp_messages_are_audited if {
	decision == "audit" with input as {"content_class": "MCP_REQUEST", "mcp_method": "tools/list"}
	decision == "audit" with input as {"content_class": "MCP_RESPONSE"}
}

test_dangerous_words_come_from_data if {
	decision == "audit" with input as call("run_shell_command")
		with data.busted_config.dangerous_mcp_tool_words as []
}

test_non_mcp_is_not_touched if {
	count(audit) == 0 with input as {"content_class": "HTTP_REQUEST", "mcp_tool": "exec"}
}
