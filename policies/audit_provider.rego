# Audit all traffic to the chosen providers (the seed's example: Anthropic).
#
# Input: llm_provider.
# Settings: busted_config.audited_providers (default ["Anthropic"]).
package busted

import rego.v1

import data.busted.lib

audit contains msg if {
	input.llm_provider != "" # cheap test first: most events name no provider
	input.llm_provider in lib.audited_providers
	msg := sprintf("audit: all traffic to %s is audited", [input.llm_provider])
}
