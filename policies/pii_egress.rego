# Deny prompts that carry PII or secrets to any provider that is not local.
#
# Input: pii_detected, pii_types, llm_provider, content_class, direction.
# Settings: busted_config.local_providers (default ["Ollama"]).
package busted

import rego.v1

import data.busted.lib

deny contains msg if {
	input.pii_detected == true
	input.llm_provider != ""
	not input.llm_provider in lib.local_providers
	not lib.is_response
	msg := sprintf("pii: %s sent to non-local provider %s", [lib.pii_list, input.llm_provider])
}
