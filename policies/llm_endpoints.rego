# Deny LLM requests to unsanctioned endpoints: OpenAI- or Anthropic-compatible APIs
# served by hosts that are not on the allow-list (a self-hosted or unknown model
# server).
#
# Input: llm_provider, sni, http_headers.host, dns_name, dst_ip, content_class,
# direction.
# Settings: busted_config.sanctioned_llm_hosts (names; "*.example.com" for subdomains).
package busted

import rego.v1

import data.busted.lib

deny contains msg if {
	endswith(input.llm_provider, "-compatible")
	not lib.is_response
	not lib.host_in(lib.host, lib.sanctioned_llm_hosts)
	msg := sprintf("endpoint: %s API at unsanctioned host %s", [input.llm_provider, lib.host_label])
}
