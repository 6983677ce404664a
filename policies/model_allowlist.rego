# Deny requests for models that are not on the allow-list.
#
# Input: llm_model, llm_provider, content_class, direction.
# Settings: busted_config.allowed_models (exact names),
# busted_config.allowed_model_prefixes ("gpt-4o" allows "gpt-4o-mini-2024-07-18"),
# busted_config.model_allowlist_exempt_providers (default ["Ollama"]: local models
# are not restricted).
package busted

import rego.v1

import data.busted.lib

deny contains msg if {
	input.llm_model != ""
	not lib.is_response
	not input.llm_provider in lib.model_allowlist_exempt_providers
	not input.llm_model in lib.allowed_models
	not strings.any_prefix_match(input.llm_model, lib.allowed_model_prefixes)
	msg := sprintf("model: %s is not on the allow-list (%s)", [input.llm_model, input.llm_provider])
}
