# Shadow AI: audit a connection that behaves like an LLM stream (busted's behavioural
# model judged one of its exchanges: input.ml_class, input.ml_confidence) to a host no
# known provider uses and that is not sanctioned: a self-hosted or unknown model server,
# typically reached through a TLS stack whose plaintext busted cannot read.
#
# Input: ml_class, ml_confidence, provider, sni, dns_name, dst_ip.
# Settings: busted_config.shadow_ai_min_confidence (default 0.8),
# busted_config.sanctioned_llm_hosts.
package busted

import rego.v1

import data.busted.lib

audit contains msg if {
	input.ml_class == "llm_stream" # cheap test first: most events carry no verdict
	input.ml_confidence >= lib.shadow_ai_min_confidence
	input.provider == ""
	not lib.host_in(lib.host, lib.sanctioned_llm_hosts)
	msg := sprintf("shadow AI: %s streams like an LLM (%.2f) from %s, a host no known provider uses",
		[input.process_name, input.ml_confidence, lib.host_label])
}
