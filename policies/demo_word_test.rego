package busted

import rego.v1

test_blocked_word_to_anthropic_is_denied if {
	decision == "deny" with input as {
		"llm_provider": "Anthropic", "llm_model": "claude-sonnet-4-20250514",
		"tls_payload": "{\"messages\":[{\"role\":\"user\",\"content\":\"say hi to Berko\"}]}",
	}
}

test_reason_names_the_word if {
	"demo: payload to Anthropic contains the blocked word berko" in deny with input as {
		"llm_provider": "Anthropic", "tls_payload": "berko",
	}
}

test_other_providers_are_not_touched if {
	count(deny) == 0 with input as {"llm_provider": "OpenAI", "tls_payload": "berko"}
}

test_clean_payload_is_only_audited if {
	decision == "audit" with input as {"llm_provider": "Anthropic", "tls_payload": "hello"}
}

test_words_come_from_data if {
	decision == "deny" with input as {"llm_provider": "Anthropic", "tls_payload": "top secret"}
		with data.busted_config.blocked_words as ["secret"]
}
