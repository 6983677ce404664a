package busted

import rego.v1

test_email_to_openai_is_denied if {
	decision == "deny" with input as {
		"content_class": "LLM_REQUEST", "direction": "write", "llm_provider": "OpenAI",
		"llm_model": "gpt-4o", "pii_detected": true, "pii_types": ["email"],
	}
}

test_reason_names_the_pii_and_provider if {
	"pii: email, ssn sent to non-local provider Mistral" in deny with input as {
		"llm_provider": "Mistral", "pii_detected": true, "pii_types": ["email", "ssn"],
	}
}

test_seed_example_input_is_denied if {
	decision == "deny" with input as {"llm_provider": "Anthropic", "pii_detected": true}
}

test_pii_to_ollama_is_allowed if {
	count(deny) == 0 with input as {
		"llm_provider": "Ollama", "pii_detected": true, "pii_types": ["email"],
	}
}

test_pii_in_a_response_is_not_a_prompt if {
	count(deny) == 0 with input as {
		"content_class": "LLM_RESPONSE", "llm_provider": "OpenAI", "pii_detected": true,
	}
}

test_local_providers_come_from_data if {
	count(deny) == 0 with input as {"llm_provider": "vLLM-box", "pii_detected": true}
		with data.busted_config.local_providers as ["Ollama", "vLLM-box"]
}
