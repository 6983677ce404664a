# The seed's demo rule: deny anything sent to Anthropic whose captured plaintext
# contains one of the blocked words (case-insensitive).
#
# Input: llm_provider, tls_payload.
# Settings: busted_config.blocked_words (default none; data.json ships ["berko"]).
package busted

import rego.v1

import data.busted.lib

deny contains msg if {
	input.llm_provider == "Anthropic"
	payload := lower(input.tls_payload)
	some word in lib.blocked_words
	contains(payload, lower(word))
	msg := sprintf("demo: payload to Anthropic contains the blocked word %s", [word])
}
