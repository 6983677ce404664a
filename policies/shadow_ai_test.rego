package busted

import rego.v1

stream_to(host, p) := {
	"event_type": "TCP_EXCHANGE", "process_name": "wget", "ml_class": "llm_stream",
	"ml_confidence": p, "provider": "", "sni": host, "dns_name": "", "dst_ip": "10.1.2.3",
	"content_class": "", "llm_provider": "", "http_headers": {},
}

test_stream_to_unknown_host_is_audited if {
	decision == "audit" with input as stream_to("llm.corp.example", 0.94)
}

test_reason_names_process_host_and_confidence if {
	"shadow AI: wget streams like an LLM (0.94) from llm.corp.example, a host no known provider uses" in audit with input as stream_to("llm.corp.example", 0.94)
}

test_low_confidence_is_not_audited if {
	count(audit) == 0 with input as stream_to("llm.corp.example", 0.55)
}

test_known_provider_is_not_shadow if {
	count(audit) == 0 with input as object.union(stream_to("api.openai.com", 0.99), {"provider": "OpenAI"})
}

test_sanctioned_host_is_not_shadow if {
	count(audit) == 0 with input as stream_to("openrouter.ai", 0.99)
}

test_other_behaviour_is_not_audited if {
	count(audit) == 0 with input as object.union(stream_to("llm.corp.example", 0.99), {"ml_class": "http"})
}

test_threshold_comes_from_data if {
	decision == "audit" with input as stream_to("llm.corp.example", 0.6)
		with data.busted_config.shadow_ai_min_confidence as 0.5
}
