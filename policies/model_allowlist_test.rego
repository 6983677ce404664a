package busted

import rego.v1

test_listed_prefix_is_allowed if {
	decision == "allow" with input as {
		"content_class": "LLM_REQUEST", "llm_provider": "OpenAI",
		"llm_model": "gpt-4o-mini-2024-07-18",
	}
}

test_exact_name_is_allowed if {
	decision == "allow" with input as {"llm_provider": "Groq", "llm_model": "llama-3.3-70b-versatile"}
}

test_unlisted_model_is_denied if {
	"model: gpt-3.5-turbo is not on the allow-list (OpenAI)" in deny with input as {
		"content_class": "LLM_REQUEST", "llm_provider": "OpenAI", "llm_model": "gpt-3.5-turbo",
	}
}

test_local_models_are_exempt if {
	decision == "allow" with input as {"llm_provider": "Ollama", "llm_model": "llama3.1:8b"}
}

test_unknown_model_is_not_judged if {
	decision == "allow" with input as {"llm_provider": "OpenAI", "llm_model": ""}
}

test_responses_are_not_judged if {
	decision == "allow" with input as {
		"content_class": "LLM_RESPONSE", "llm_provider": "OpenAI", "llm_model": "gpt-3.5-turbo",
	}
}

test_list_comes_from_data if {
	decision == "allow" with input as {"llm_provider": "OpenAI", "llm_model": "gpt-3.5-turbo"}
		with data.busted_config.allowed_models as ["gpt-3.5-turbo"]
}
