package busted

import rego.v1

test_anthropic_is_audited if {
	decision == "audit" with input as {
		"content_class": "LLM_REQUEST", "llm_provider": "Anthropic",
		"llm_model": "claude-sonnet-4-20250514",
	}
}

test_reason_is_given if {
	"audit: all traffic to Anthropic is audited" in audit with input as {"llm_provider": "Anthropic"}
}

test_openai_is_not_audited if {
	count(audit) == 0 with input as {"llm_provider": "OpenAI", "llm_model": "gpt-4o"}
}

test_audited_providers_come_from_data if {
	decision == "audit" with input as {"llm_provider": "OpenAI", "llm_model": "gpt-4o"}
		with data.busted_config.audited_providers as ["OpenAI"]
}

test_deny_beats_audit if {
	decision == "deny" with input as {"llm_provider": "Anthropic", "llm_model": "claude-2.1"}
}
