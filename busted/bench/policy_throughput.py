"""`busted bench policy`: policy evaluations/s through the policy worker's own code.

Events go through :meth:`busted.workers.policy_worker.PolicyStage.process` in batches of 64,
exactly as in the worker (input document, engine, precedence, event fields), with
every policy of the directory loaded (by default the shipped ``policies/``). Events
are the realistic samples of :mod:`busted.policy.samples`, each copy made unique
(pid, ports, prompt text) so nothing could be served from a cache. Two mixes: ``llm``
(only LLM/MCP events: every policy rule has work to do) and ``all`` (with the
connection, DNS and plain HTTPS events a host also produces). Both engines are
measured: the compiled VM the worker uses when it can, and the interpreter it falls
back to (Rego v0 files, VM gaps). Equal policy inputs reuse a decision (the worker
does that too); the cache hit ratio is reported, and ``--no-cache`` turns it off.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import click

from busted.config import BATCH_SIZE, MonitorConfig
from busted.errors import UsageError

GOAL_PER_S = 20_000
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "policies"


def _events(mix: str, count: int) -> list[dict]:
    from busted.policy.samples import shipped_events

    samples = shipped_events()
    if mix == "llm":
        samples = [e for e in samples if str(e.get("content_class", "")).startswith(("LLM_", "MCP_"))]
    out = []
    for i in range(count):
        event = copy.deepcopy(samples[i % len(samples)])
        event["pid"] = 1000 + i % 30000
        event["src_port"] = 1024 + i % 60000
        out.append(event)
    return out


def _make_unique(events: list[dict], round_no: int) -> None:
    """Give every payload and prompt a new tail, so no input repeats across rounds;
    only events without one (connections, DNS) repeat, as they do on a real host."""
    for i, event in enumerate(events):
        tail = f" #{round_no}.{i}"
        for name in ("tls_payload", "llm_user_message"):
            text = event.get(name)
            if text:
                event[name] = text.split(" #", 1)[0] + tail


def _measure(stage, events: list[dict], seconds: float) -> dict:
    batches = [events[i:i + BATCH_SIZE] for i in range(0, len(events), BATCH_SIZE)]
    _make_unique(events, 0)
    stage.process(batches[0])  # warm up
    decider = stage.live.decider
    hits0 = decider.cache_hits
    done = 0
    wall = cpu = 0.0
    round_no = 0
    while wall < seconds:
        round_no += 1
        _make_unique(events, round_no)  # not timed: the worker gets fresh events for free
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        for batch in batches:
            stage.process(batch)
        wall += time.perf_counter() - wall0
        cpu += time.thread_time() - cpu0
        done += len(events)
    return {
        "evaluations": done,
        "seconds": round(wall, 3),
        "per_s": round(done / wall),
        "per_cpu_s": round(done / cpu) if cpu > 0 else None,
        "us_per_evaluation": round(wall / done * 1e6, 2),
        # Equal policy inputs (same host, no payload) reuse a decision: say how often.
        "cache_hit_ratio": round((decider.cache_hits - hits0) / done, 3),
    }


@click.command(
    epilog="""\b
Examples:
  busted bench policy
  busted bench policy --json
  busted bench policy --dir ./policies/ --seconds 5 --engine vm
""",
)
@click.option("--dir", "dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Policy directory (repeatable; default: the shipped policies/).")
@click.option("--seconds", type=click.FloatRange(0.1, 600), default=2.0, show_default=True,
              help="How long each measurement runs.")
@click.option("--engine", type=click.Choice(["vm", "interpreter", "both"]), default="both",
              show_default=True, help="Which evaluation path to measure.")
@click.option("--no-cache", is_flag=True, help="Evaluate every event, even equal inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def policy(dirs: tuple[str, ...], seconds: float, engine: str, no_cache: bool,
           as_json: bool) -> int:
    """Policy evaluations/s with the shipped policies, as the policy worker runs them.

    The goal is 20,000 evaluations/s or more with every shipped policy loaded.
    """
    from busted.policy.reload import LivePolicy
    from busted.workers.policy_worker import PolicyStage

    paths = tuple(Path(d).absolute() for d in dirs) or (SHIPPED_DIR,)
    for path in paths:
        if not path.is_dir():
            raise UsageError(f"no policy directory at {path}.", "Give one with --dir DIR.")
    config = MonitorConfig(policy_dirs=paths)
    stage = PolicyStage(config)
    engines = ["vm", "interpreter"] if engine == "both" else [engine]
    report: dict = {
        "policy_dirs": [str(p) for p in paths],
        "modules": len(stage.live.policy_set.modules),
        "input_fields": sorted(stage.live.policy_set.input_fields or []) or "all",
        "goal_per_s": GOAL_PER_S,
        "results": {},
    }
    for name in engines:
        stage.live = LivePolicy(paths, (), config.policy_error, prefer_vm=(name == "vm"))
        if no_cache:
            stage.live.decider.cache = None
        used = "vm" if stage.live.decider.policy.uses_vm else "interpreter"
        for mix in ("llm", "all"):
            result = _measure(stage, _events(mix, 4 * BATCH_SIZE * 8), seconds)
            result["engine_used"] = used
            report["results"][f"{name}/{mix}"] = result
    vm_all = report["results"].get("vm/all")
    if vm_all:
        report["meets_goal"] = vm_all["per_s"] >= GOAL_PER_S
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0
    click.echo(f"policy set: {', '.join(report['policy_dirs'])} ({report['modules']} modules)")
    click.echo(f"{'engine/mix':20s} {'eval/s':>10s} {'eval/CPU-s':>11s} {'µs/eval':>9s} "
               f"{'cache hits':>10s}")
    for key, r in report["results"].items():
        click.echo(f"{key:20s} {r['per_s']:>10,d} {r['per_cpu_s'] or 0:>11,d} "
                   f"{r['us_per_evaluation']:>9.1f} {r['cache_hit_ratio']:>10.1%}")
    if vm_all:
        verdict = "meets" if report["meets_goal"] else "misses"
        click.echo(f"goal {GOAL_PER_S:,}/s (vm, all events): {verdict}")
    return 0
