"""Privileged tier: root, real BPF, real TLS clients (a package so the harness imports
relatively and test module names cannot clash with other tiers)."""
