"""Reproducible training traffic for the behavioural model (``sudo busted ml gather``).

Two phases, each under its own ``busted monitor --format json``: a training phase and a
held-out phase made with another seed, other token rates and first-token delays, another
mix of clients and other non-LLM sources. Each phase runs sessions, a few at a time:

- LLM streams: the official ``openai`` and ``anthropic`` SDKs, curl and node's fetch
  against :class:`busted.ml.server.StreamServer` (SSE as the providers send it, seeded
  token rate and first-token delay); plain (non-streamed) LLM answers through the SDKs;
- not LLM: REST-like loops on a keep-alive connection, downloads of a few KB to tens of
  MB from the local server, WebSocket-like chatter, idle long-lived connections, and real
  downloads from PyPI (pip), the npm registry and deb.debian.org.

Every client is a program busted reads (OpenSSL), so busted's classifier labels each
connection (:mod:`busted.ml.labels`); the rows of the training phase train the model,
those of the held-out phase score it. The files land in ``--out-dir``; the model where
``--model-out`` says (``busted/ml/default_model.json`` for the shipped one).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click

from busted.errors import PrivilegeError, UsageError
from busted.ml import labels
from busted.ml.server import StreamServer

CLIENT_TIMEOUT_S = 180
PARALLEL = 4


@dataclass
class Phase:
    name: str
    seed: int
    rate: tuple[float, float]  # tokens per second
    ttfb: tuple[float, float]  # seconds to the first token
    tokens: tuple[int, int]
    mix: dict[str, int]  # session kind -> sessions
    packages: dict[str, tuple[str, ...]]  # real downloads: source -> names


TRAIN = Phase("train", 1, (20, 150), (0.2, 3.0), (20, 150),
              {"openai_stream": 14, "anthropic_stream": 10, "curl_stream": 8, "node_stream": 6,
               "openai_plain": 8, "rest": 16, "bulk": 10, "ws": 8, "idle": 5},
              {"pypi": ("six", "idna", "certifi", "wheel"),
               "debian": ("dists/bookworm/Release", "dists/bookworm/main/binary-amd64/Release")})
HELDOUT = Phase("heldout", 2, (15, 180), (0.1, 4.0), (15, 200),
                {"openai_stream": 6, "anthropic_stream": 8, "curl_stream": 4, "node_stream": 6,
                 "openai_plain": 5, "rest": 10, "bulk": 6, "ws": 6, "idle": 4},
                {"npm": ("express", "lodash", "left-pad", "chalk"),
                 "pypi": ("packaging", "attrs"),
                 "debian": ("dists/bookworm-updates/Release",)})

_PY_SDK = r"""
import json, sys, time
args = json.loads(sys.argv[1])
if args["sdk"] == "openai":
    import openai
    client = openai.OpenAI(base_url=args["url"] + "/v1", api_key="sk-test-gather",
                           http_client=openai.DefaultHttpxClient(verify=args["ca"], timeout=120))
else:
    import anthropic
    client = anthropic.Anthropic(base_url=args["url"], api_key="sk-ant-gather",
                                 http_client=anthropic.DefaultHttpxClient(verify=args["ca"], timeout=120))
for r in args["requests"]:
    headers = {"x-busted-" + k: str(v) for k, v in r.items()}
    prompt = [{"role": "user", "content": "Tell me about eBPF, variant %d" % r["seed"]}]
    if args["sdk"] == "openai":
        out = client.chat.completions.create(model="gpt-4o-mini", messages=prompt,
                                             stream=args["stream"], extra_headers=headers)
    else:
        out = client.messages.create(model="claude-sonnet-4-5", max_tokens=512, messages=prompt,
                                     stream=args["stream"], extra_headers=headers)
    if args["stream"]:
        for _ in out:
            pass
    time.sleep(r.get("pause", 0.2))
"""

_PY_REST = r"""
import json, random, sys, time, httpx
args = json.loads(sys.argv[1])
rng = random.Random(args["seed"])
with httpx.Client(verify=args["ca"], timeout=60) as http:
    for i in range(args["calls"]):
        if rng.random() < 0.3:
            http.post(args["url"] + "/api/orders/%d" % rng.randrange(10**6),
                      json={"sku": rng.randrange(999), "qty": rng.randint(1, 9),
                            "note": "x" * rng.randrange(2000)})
        else:
            http.get(args["url"] + "/api/items/%d" % rng.randrange(10**6))
        time.sleep(rng.uniform(*args["pause"]))
    if args.get("idle"):
        time.sleep(args["idle"])
        http.get(args["url"] + "/api/items/1")
"""

_PY_PYPI = r"""
import json, sys, urllib.request
name, work = sys.argv[1], sys.argv[2]
meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/%s/json" % name, timeout=60))
for f in meta["urls"][:2]:
    data = urllib.request.urlopen(f["url"], timeout=60).read()
    open(work + "/" + f["filename"], "wb").write(data)
"""

_PY_WS = r"""
import json, sys
from pathlib import Path
from busted.ml.server import ws_client
args = json.loads(sys.argv[1])
ws_client(args["port"], Path(args["ca"]), args["messages"], args["seed"])
"""

_NODE = r"""
const args = JSON.parse(process.argv[1]);
(async () => {
  for (const r of args.requests) {
    const headers = {"content-type": "application/json", "authorization": "Bearer sk-node-gather"};
    for (const [k, v] of Object.entries(r)) headers["x-busted-" + k] = String(v);
    const res = await fetch(args.url + "/v1/chat/completions", {method: "POST", headers,
      body: JSON.stringify({model: "gpt-4o-mini", stream: true,
                            messages: [{role: "user", content: "node variant " + r.seed}]})});
    const reader = res.body.getReader();
    while (!(await reader.read()).done) {}
    await new Promise(ok => setTimeout(ok, 1000 * (r.pause || 0.2)));
  }
})();
"""


def _llm_requests(rng: random.Random, phase: Phase, n: int) -> list[dict]:
    return [{"rate": round(rng.uniform(*phase.rate), 1), "ttfb": round(rng.uniform(*phase.ttfb), 3),
             "tokens": rng.randint(*phase.tokens), "seed": rng.randrange(10**6),
             "pause": round(rng.uniform(0.05, 1.0), 2)} for _ in range(n)]


def plan(phase: Phase, url: str, port: int, ca: Path, work: Path) -> list[list[str]]:
    """The phase's client command lines, in a seeded order."""
    rng = random.Random(phase.seed)
    py = sys.executable
    cmds: list[list[str]] = []
    for kind, count in phase.mix.items():
        for _ in range(count):
            if kind in ("openai_stream", "anthropic_stream", "openai_plain"):
                args = {"sdk": kind.split("_")[0], "url": url, "ca": str(ca),
                        "stream": kind.endswith("stream"),
                        "requests": _llm_requests(rng, phase, rng.randint(1, 4))}
                cmds.append([py, "-c", _PY_SDK, json.dumps(args)])
            elif kind == "curl_stream":
                r = _llm_requests(rng, phase, 1)[0]
                body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                                   "messages": [{"role": "user", "content": f"curl {r['seed']}"}]})
                cmds.append(["curl", "-sN", "-o", "/dev/null", "--cacert", str(ca), "-H",
                             "content-type: application/json", "-H", "authorization: Bearer sk-curl",
                             *[x for k in ("rate", "ttfb", "tokens", "seed")
                               for x in ("-H", f"x-busted-{k}: {r[k]}")],
                             "-d", body, f"{url}/v1/chat/completions"])
            elif kind == "node_stream":
                args = {"url": url, "requests": _llm_requests(rng, phase, rng.randint(1, 3))}
                cmds.append(["env", f"NODE_EXTRA_CA_CERTS={ca}", "node", "-e", _NODE, json.dumps(args)])
            elif kind in ("rest", "idle"):
                args = {"url": url, "ca": str(ca), "seed": rng.randrange(10**6),
                        "calls": rng.randint(3, 25) if kind == "rest" else 1,
                        "pause": [0.02, rng.choice((0.1, 0.5, 1.5))],
                        "idle": round(rng.uniform(3, 12), 1) if kind == "idle" else 0}
                cmds.append([py, "-c", _PY_REST, json.dumps(args)])
            elif kind == "bulk":
                size = int(10 ** rng.uniform(3.5, 7.7))
                cmds.append(["curl", "-s", "-o", "/dev/null", "--cacert", str(ca), f"{url}/blob/{size}"])
            elif kind == "ws":
                args = {"port": port, "ca": str(ca), "messages": rng.randint(5, 30),
                        "seed": rng.randrange(10**6)}
                cmds.append([py, "-c", _PY_WS, json.dumps(args)])
    for source, names in phase.packages.items():
        for name in names:
            if source == "pypi":
                cmds.append([py, "-c", _PY_PYPI, name, str(work)])
            elif source == "npm":
                cmds.append(["curl", "-s", "-o", "/dev/null", f"https://registry.npmjs.org/{name}"])
            elif source == "debian":
                cmds.append(["curl", "-s", "-o", "/dev/null", f"https://deb.debian.org/debian/{name}"])
    rng.shuffle(cmds)
    return cmds


def _run(cmd: list[str], pids: set[int]) -> int:
    """Run one client; its pid joins ``pids`` (the monitor sees the whole host: only the
    phase's own clients make its rows)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids.add(proc.pid)
    try:
        return proc.wait(CLIENT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -1


def _private(path: Path):
    """A new file only its owner can read (O_NOFOLLOW: never through a planted link)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb")


class Monitor:
    """``busted monitor --format json`` writing events to a file, until stopped."""

    def __init__(self, events: Path, runtime_dir: Path) -> None:
        self.events = events
        self.err = events.with_suffix(".log")
        self.argv = [sys.executable, "-m", "busted", "monitor", "--format", "json",
                     "--runtime-dir", str(runtime_dir)]

    def __enter__(self) -> Monitor:
        # the events carry every plaintext the monitor read on the host: root's eyes only
        self.out_f = _private(self.events)
        self.err_f = _private(self.err)
        self.proc = subprocess.Popen(self.argv, stdout=self.out_f, stderr=self.err_f)
        deadline = time.monotonic() + 120
        while b"capture ready" not in self.err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise UsageError(f"the monitor did not start: see {self.err}")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(3)  # the last closes travel through the pipeline
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out_f.close()
        self.err_f.close()


def _events(path: Path):
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def run_phase(phase: Phase, server: StreamServer, ca: Path, out_dir: Path, scale: float) -> Path:
    if scale != 1.0:
        phase = Phase(phase.name, phase.seed, phase.rate, phase.ttfb, phase.tokens,
                      {k: max(1, round(v * scale)) for k, v in phase.mix.items()}, phase.packages)
    work = Path(tempfile.mkdtemp(prefix=f"busted-ml-{phase.name}-"))
    cmds = plan(phase, f"https://127.0.0.1:{server.port}", server.port, ca, work)
    events = out_dir / f"{phase.name}-events.jsonl"
    click.echo(f"{phase.name}: {len(cmds)} sessions (seed {phase.seed})", err=True)
    t0 = time.monotonic()
    pids: set[int] = set()
    runtime_dir = Path(tempfile.mkdtemp(prefix="busted-ml-rt-")) / "rt"
    with Monitor(events, runtime_dir), ThreadPoolExecutor(PARALLEL) as pool:
        codes = list(pool.map(lambda cmd: _run(cmd, pids), cmds))
    failed = sum(1 for c in codes if c != 0)
    click.echo(f"{phase.name}: done in {time.monotonic() - t0:.0f} s, {failed} sessions failed", err=True)
    rows_path = out_dir / f"{phase.name}-rows.jsonl"
    made = [r for r in labels.rows(_events(events))
            if r["label"] != labels.UNKNOWN and r["pid"] in pids]
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in made))
    counts: dict[str, int] = {}
    for r in made:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    click.echo(f"{phase.name}: {len(made)} labelled rows {counts} -> {rows_path}", err=True)
    return rows_path


def main(out_dir: Path, seed: int, heldout_seed: int, scale: float, model_out: str | None) -> int:
    from busted.bench.tls_workload import make_certificates
    from busted.commands.ml import print_scores
    from busted.ml import train as trainer

    if os.geteuid() != 0:
        raise PrivilegeError("busted ml gather runs a monitor: it needs root", "run it with sudo")
    out_dir.mkdir(parents=True, exist_ok=True)
    pki = out_dir / "pki"
    pki.mkdir(exist_ok=True)
    ca, cert, key = make_certificates(pki, host="localhost", also="IP:127.0.0.1")
    train_phase = Phase(TRAIN.name, seed, TRAIN.rate, TRAIN.ttfb, TRAIN.tokens, TRAIN.mix, TRAIN.packages)
    held_phase = Phase(HELDOUT.name, heldout_seed, HELDOUT.rate, HELDOUT.ttfb, HELDOUT.tokens,
                       HELDOUT.mix, HELDOUT.packages)
    with StreamServer(cert, key) as server:
        train_rows = run_phase(train_phase, server, ca, out_dir, scale)
        held_rows = run_phase(held_phase, server, ca, out_dir, scale)
    model, _comparison = trainer.train(trainer.read_rows([train_rows]), seed=0,
                                       sources=[f"busted ml gather, seed {seed}"])
    held = trainer.evaluate(model, trainer.read_rows([held_rows]))
    model.card["heldout"] = dict(held, source=f"busted ml gather, seed {heldout_seed}")
    target = Path(model_out) if model_out else out_dir / "model.json"
    model.save(target)
    click.echo(json.dumps(model.card["holdout_quarter"], indent=1))
    click.echo(f"model -> {target}; held-out phase:")
    print_scores(held)
    return 0
