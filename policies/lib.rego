# Helpers shared by the shipped policies.
#
# They live in their own package (data.busted.lib) so they never clash with rules you
# add to package busted. Every setting read from data.json has a default here, so the
# policies still work when data.json is missing or lacks a key.
#
# Written for speed as well as clarity: each rule evaluated costs the engine a few
# thousand instructions per event, so helpers are few and builtins do the looping
# where one exists (strings.any_prefix_match).
package busted.lib

import rego.v1

# --- settings (data.json: {"busted_config": {...}}) ---------------------------------

default local_providers := ["Ollama"]

local_providers := data.busted_config.local_providers

default audited_providers := ["Anthropic"]

audited_providers := data.busted_config.audited_providers

default allowed_models := []

allowed_models := data.busted_config.allowed_models

default allowed_model_prefixes := []

allowed_model_prefixes := data.busted_config.allowed_model_prefixes

default model_allowlist_exempt_providers := ["Ollama"]

model_allowlist_exempt_providers := data.busted_config.model_allowlist_exempt_providers

default dangerous_mcp_tools := []

dangerous_mcp_tools := data.busted_config.dangerous_mcp_tools

default dangerous_mcp_tool_words := []

dangerous_mcp_tool_words := data.busted_config.dangerous_mcp_tool_words

default shadow_ai_min_confidence := 0.8

shadow_ai_min_confidence := data.busted_config.shadow_ai_min_confidence

default sanctioned_llm_hosts := []

sanctioned_llm_hosts := data.busted_config.sanctioned_llm_hosts

default blocked_words := []

blocked_words := data.busted_config.blocked_words

# --- facts about the event ----------------------------------------------------------

# Responses come back from a provider; the rules about what we send skip them.
is_response if endswith(input.content_class, "_RESPONSE")

is_response if input.direction == "read"

# The server's name as best we know it: SNI, then the HTTP Host header, then the DNS
# name the address was resolved from, then the bare address; "" when none is known.
host := lower(input.sni) if {
	input.sni != ""
} else := lower(strip_port(http_host)) if {
	http_host != ""
} else := lower(input.dns_name) if {
	input.dns_name != ""
} else := input.dst_ip if {
	input.dst_ip != ""
} else := ""

host_label := host if {
	host != ""
} else := "(unknown)"

# input.http_headers.host rather than object.get(input.http_headers, ...): reading one
# header lets Busted send the engine that header alone, not all of them.
http_host := input.http_headers.host if {
	input.http_headers.host != ""
} else := ""

strip_port(hostport) := parts[0] if {
	parts := split(hostport, ":")
	count(parts) == 2
} else := hostport

# "*.example.com" in a host list matches every subdomain of example.com.
host_in(h, hosts) if h in hosts

host_in(h, hosts) if {
	some pattern in hosts
	startswith(pattern, "*.")
	endswith(h, substring(pattern, 1, -1))
}

pii_list := concat(", ", input.pii_types) if {
	count(input.pii_types) > 0
} else := "unspecified"

# A tool name is dangerous if it is listed, or if it contains a dangerous word
# ("run_shell_command", "writeFile", "exec", ...). The name is compared in lower
# case, so the lists in data.json are written in lower case.
dangerous_tool(name) if lower(name) in dangerous_mcp_tools

dangerous_tool(name) if {
	n := lower(name)
	some word in dangerous_mcp_tool_words
	contains(n, word)
}
