package busted

import rego.v1

test_unknown_openai_compatible_host_is_denied if {
	"endpoint: OpenAI-compatible API at unsanctioned host llm.shadow.example" in deny with input as {
		"content_class": "LLM_REQUEST", "llm_provider": "OpenAI-compatible",
		"sni": "llm.shadow.example", "llm_model": "gpt-4o",
	}
}

test_anthropic_compatible_is_covered_too if {
	decision == "deny" with input as {"llm_provider": "Anthropic-compatible", "sni": "x.example"}
}

test_host_header_is_used_without_sni if {
	decision == "allow" with input as {
		"llm_provider": "OpenAI-compatible", "sni": "",
		"http_headers": {"host": "localhost:8000"}, "dst_ip": "127.0.0.1",
	}
}

test_wildcard_entries_match_subdomains if {
	decision == "allow" with input as {"llm_provider": "OpenAI-compatible", "sni": "corp.openai.azure.com"}
}

test_unknown_host_is_denied if {
	"endpoint: OpenAI-compatible API at unsanctioned host (unknown)" in deny with input as {
		"llm_provider": "OpenAI-compatible",
	}
}

test_allow_list_comes_from_data if {
	decision == "allow" with input as {"llm_provider": "OpenAI-compatible", "sni": "gpu.lan"}
		with data.busted_config.sanctioned_llm_hosts as ["gpu.lan"]
}

test_named_providers_are_not_touched if {
	decision == "allow" with input as {"llm_provider": "OpenAI", "sni": "api.openai.com"}
}
