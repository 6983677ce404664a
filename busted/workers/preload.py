"""What the supervisor's fork server imports once, before it forks any worker.

The supervisor starts its workers through ``multiprocessing``'s fork server (see
:func:`busted.supervisor.worker_context`): one plain Python process that imports this
module, then forks a copy of itself for every worker. Whatever is imported here is in
memory once and shared by all five workers (copy-on-write pages), instead of being
imported again in each: the interpreter's start-up, zmq, msgpack, the event schema,
the worker runtime and every role's stage module. A worker only pays for the pages it
changes afterwards. Figures: ``busted bench memory`` (bench/README.md, "Memory").

Not imported here: what capture alone loads when it opens its source (bcc and its
compiler libraries). Only capture uses them, so sharing would save nothing, and capture
gives their pages back after compiling (:mod:`busted.kernel.memtrim`), which it could
not do for pages the fork server holds.

Importing this module has two side effects, which is why nothing but the fork server
imports it:

- the fork server dies with the supervisor (parent-death signal). multiprocessing would
  keep it alive as long as any worker lives (each holds its "alive" pipe), and the
  workers die with the fork server, their parent: without this, a killed supervisor
  would leave them all running;
- :func:`gc.freeze`, so the cyclic garbage collector of a forked worker never walks
  (and so never writes to, un-sharing them) the objects inherited from here.
"""

from __future__ import annotations

import gc
import os

import busted.cli  # noqa: F401  (multiprocessing re-runs the `busted` script in each child)
import busted.workers.capture_worker  # noqa: F401
import busted.workers.classify_worker  # noqa: F401
import busted.workers.identity_worker  # noqa: F401
import busted.workers.output_worker  # noqa: F401
import busted.workers.policy_worker  # noqa: F401
import busted.workers.runner  # noqa: F401
from busted.workers.runtime import die_with_parent

die_with_parent(os.getppid())  # the supervisor, which started the fork server
gc.freeze()
