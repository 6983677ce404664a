"""The end-to-end harness of the privileged tests: everything the real `busted monitor`
is pointed at, built from real parts on loopback.

- :mod:`pki` — a throw-away CA and server certificates made with ``openssl``;
- :mod:`http_server` — a threaded HTTP/1.1 server (TLS or plain) that records every request;
- :mod:`fake_apis` — what that server answers: OpenAI, Anthropic (incl. SSE), Ollama
  (NDJSON), a large uninteresting download;
- :mod:`dns_responder` — a UDP DNS responder answering A queries;
- :mod:`namespace` — runs a client with the provider names resolved to the test server
  (private mount namespace + bind-mounted hosts file) and trusting the test CA;
- :mod:`clients` — the real clients (Python ``ssl``, httpx, curl, openai and anthropic SDKs,
  node) and their results;
- :mod:`monitor` and :mod:`events` — the real monitor as a subprocess, and waiting on its
  JSON events with a deadline.
"""
