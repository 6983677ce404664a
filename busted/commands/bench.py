"""`busted bench ...`: measurements of the real components, one module each."""

from __future__ import annotations

from busted.cli import lazy_group

BENCHES: dict[str, tuple[str, str]] = {
    "pipeline": ("busted.bench.pipeline:pipeline",
                 "Events/s and latency through the real supervisor and workers."),
    "probes": ("busted.bench.probes:probes", "What the kernel probes cost traced programs (root)."),
    "enforce": ("busted.bench.enforce:enforce",
                "Latency a held write adds and request-loop throughput under --enforce (root)."),
    "go-tls": ("busted.bench.go_tls:go_tls",
               "What the Go crypto/tls probes cost a Go program per Write / Read (root)."),
    "boringssl": ("busted.bench.boringssl:boringssl_bench",
                  "What the BoringSSL probes cost a Bun program per TLS call (root)."),
    "rustls": ("busted.bench.rustls:rustls_bench",
               "What the rustls (aws-lc) probes cost a real Codex per TLS record (root)."),
    "memory": ("busted.bench.memory:memory",
               "Memory of the whole daemon (PSS), idle and at 1,000 events/s (root)."),
    "outputs": ("busted.bench.outputs:outputs",
                "Events/s through each network sink, and recovery after a receiver outage."),
    "classify": ("busted.bench.classify_throughput:classify",
                 "Classifications/s of typical requests on one core."),
    "policy": ("busted.bench.policy_throughput:policy", "Policy evaluations/s with the shipped policies."),
    "ui": ("busted_gui.bench:ui", "Dashboard frame rate at a given incoming event rate."),
}

bench = lazy_group(
    "bench",
    BENCHES,
    help="Measure throughput and overhead of the real components.",
    epilog="""\b
Examples:
  busted bench pipeline --json
  sudo busted bench probes
  sudo busted bench enforce
  sudo busted bench go-tls
  sudo busted bench boringssl
  sudo busted bench rustls
  sudo busted bench memory
  busted bench classify
""",
)
