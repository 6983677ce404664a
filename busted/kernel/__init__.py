"""Kernel-capture helpers that need no bcc: record layouts, OpenSSL discovery, kernel
feature probing, DNS decoding and container ids. :mod:`busted.sources.kernel` (the
only bcc user) builds on them; ``busted doctor`` and the tests use them directly."""
