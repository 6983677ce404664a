"""Enforcement (``busted monitor --enforce``): what decides and acts on holds and blocks.

Everything here runs in the capture worker, the only root worker; capture itself
(:mod:`busted.sources.kernel`) only observes and exposes the hold hooks.

- :mod:`busted.enforce.enforcer`: the :class:`Enforcer` — holds, releases and kills
  writers on the verdicts of classify and policy, applies the fail mode to late ones,
  and keeps the blocked destinations in the kernel's deny map;
- :mod:`busted.enforce.hooks`: the Protocols the enforcer is given — the kernel
  source's hold hooks, the connect blocker, the watchdog;
- :mod:`busted.enforce.connect_blocker`: :class:`ConnectBlocker`, the cgroup connect
  programs (``bpf/enforce.bpf.c``) that refuse new connections to blocked destinations;
- :mod:`busted.enforce.watchdog`: the separate process that resumes (or kills) held
  processes if the capture worker or the whole monitor dies
  (``python -m busted.enforce.watchdog``);
- :mod:`busted.enforce.destinations`: parsing and resolving a policy's
  ``block_destinations`` entries.
"""
