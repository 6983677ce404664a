"""Rego policies: judge each event allow / audit / deny (issue 5).

- :mod:`busted.policy.engine` — the one adapter over the ``regorus`` module;
- :mod:`busted.policy.loader` — sources (directories, data.json, inline rules), Rego
  v0/v1 detection, precedence across files;
- :mod:`busted.policy.decision` — input document, decision and reasons for one event;
- :mod:`busted.policy.reload` — the active policy of a worker and its hot reload;
- :mod:`busted.policy.testing` — the ``opa test``-like runner of ``test_*`` rules;
- :mod:`busted.policy.samples` — realistic events with the shipped policies' decisions.
"""
