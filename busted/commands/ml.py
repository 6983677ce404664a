"""`busted ml collect|train|eval|gather`: the behavioural model's tool chain (busted.ml).

collect turns an event stream (a JSON-lines file of `busted monitor --format json` or
`--output file:`, or the live `events.sock`) into labelled feature rows; train fits and
exports the model (JSON, with its card); eval scores a model on held-out rows; gather
(root) makes training traffic and runs the three on it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from busted.config import DEFAULT_RUNTIME_DIR
from busted.errors import ConnectError, UsageError


@click.group(epilog="""\b
Examples:
  sudo busted monitor --format json > ev.jsonl     (while traffic runs)
  busted ml collect --input ev.jsonl --out rows.jsonl
  busted ml train rows.jsonl --out model.json
  busted ml eval --model model.json heldout.jsonl
  sudo busted ml gather --out-dir /tmp/ml          (make traffic, collect, train, eval)
""")
def ml() -> None:
    """Recognise LLM traffic by how a connection behaves (scikit-learn, offline)."""


def _file_events(path: str) -> Iterator[dict[str, Any]]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def _live_events(runtime_dir: Path, duration: float) -> Iterator[dict[str, Any]]:
    import zmq

    from busted import schema

    path = runtime_dir / "events.sock"
    if not path.exists():
        raise ConnectError(f"no monitor is publishing at {path}",
                           "start `sudo busted monitor` first, or pass --input FILE")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"events")
    sock.connect(f"ipc://{path}")
    end = time.monotonic() + duration if duration > 0 else float("inf")
    try:
        while time.monotonic() < end:
            if not sock.poll(200):
                continue
            frames = sock.recv_multipart()
            if len(frames) == 2 and frames[0] == b"events":
                try:
                    yield from schema.decode_batch(frames[1])
                except schema.DecodeError:
                    continue
    except KeyboardInterrupt:
        return
    finally:
        sock.close()


@ml.command()
@click.option("--input", "inputs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A JSON-lines event file (repeatable). Without it: the live monitor.")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=str(DEFAULT_RUNTIME_DIR),
              show_default=True, help="The live monitor's runtime directory.")
@click.option("--duration", type=float, default=0.0, help="Live: seconds to listen (0: until Ctrl-C).")
@click.option("--out", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="Where the rows go (JSON lines).")
@click.option("--all/--labelled", "keep_all", default=False, show_default=True,
              help="Keep rows labelled unknown (no plaintext seen) too.")
def collect(inputs: tuple[str, ...], runtime_dir: str, duration: float, out: str, keep_all: bool) -> int:
    """Labelled feature rows: one per exchange, labelled by the classifier's verdict on
    the same connection."""
    from busted.ml.labels import UNKNOWN, rows

    if inputs:
        events: Any = (e for path in inputs for e in _file_events(path))
    else:
        events = _live_events(Path(runtime_dir), duration)
    made = [r for r in rows(events) if keep_all or r["label"] != UNKNOWN]
    text = "".join(json.dumps(r) + "\n" for r in made)
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text)
    counts: dict[str, int] = {}
    for r in made:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    click.echo(f"{len(made)} rows: {counts}", err=True)
    return 0


@ml.command()
@click.argument("rows", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The model file to write.")
@click.option("--seed", type=int, default=0, show_default=True)
def train(rows: tuple[str, ...], out: str, seed: int) -> int:
    """Fit the model on labelled rows and write it (JSON, with its model card)."""
    from busted.ml import train as trainer

    model, comparison = trainer.train(trainer.read_rows(rows), seed=seed,
                                      sources=[Path(r).name for r in rows])
    model.save(out)
    for name, s in comparison.items():
        ls = s["llm_stream_vs_rest"]
        click.echo(f"{name:24s} held-back quarter: accuracy {s['accuracy']:.4f}  LLM stream "
                   f"precision {ls['precision']:.4f} recall {ls['recall']:.4f}  fit {s['fit_s']} s")
    click.echo(f"wrote {out}: {len(model.trees)} trees, classes {', '.join(model.classes)}")
    return 0


def print_scores(s: dict[str, Any]) -> None:
    ls = s["llm_stream_vs_rest"]
    click.echo(f"rows {s['n']}  accuracy {s['accuracy']:.4f}")
    click.echo(f"LLM stream vs rest: precision {ls['precision']:.4f}  recall {ls['recall']:.4f}  "
               f"(support {ls['support']})")
    for c, v in s["per_class"].items():
        click.echo(f"  {c:11s} precision {v['precision']:.4f}  recall {v['recall']:.4f}  n={v['support']}")
    classes = s["confusion"]["classes"]
    click.echo("confusion (rows: truth, columns: model): " + " ".join(classes))
    for c, row in zip(classes, s["confusion"]["rows"], strict=True):
        click.echo(f"  {c:11s} " + " ".join(f"{n:6d}" for n in row))


@ml.command(name="eval")
@click.argument("rows", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="The model file (default: the one shipped with busted).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate(rows: tuple[str, ...], model_path: str | None, as_json: bool) -> int:
    """Precision, recall and the confusion matrix of a model on held-out rows."""
    from busted.ml import model as mlmodel
    from busted.ml import train as trainer

    model = mlmodel.load(model_path or mlmodel.DEFAULT_PATH)
    s = trainer.evaluate(model, trainer.read_rows(rows))
    if as_json:
        click.echo(json.dumps(s, indent=1))
    else:
        print_scores(s)
    return 0


@ml.command()
@click.option("--out-dir", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--heldout-seed", type=int, default=2, show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True, help="More or fewer sessions.")
@click.option("--model-out", type=click.Path(dir_okay=False), default=None,
              help="Where the trained model goes (default: OUT_DIR/model.json).")
def gather(out_dir: str, seed: int, heldout_seed: int, scale: float, model_out: str | None) -> int:
    """Make training and held-out traffic under a monitor, then collect, train, eval (root)."""
    from busted.ml import gather as gatherer

    if scale <= 0:
        raise UsageError("--scale must be positive")
    return gatherer.main(Path(out_dir), seed, heldout_seed, scale, model_out)


@ml.command(name="bench")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="The model file (default: the one shipped with busted).")
@click.option("--rows", "rows_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Feature rows to judge (default: generated exchanges).")
@click.option("--n", type=int, default=20000, show_default=True, help="Exchanges to judge.")
def bench_ml(model_path: str | None, rows_path: str | None, n: int) -> int:
    """Cost of one behavioural verdict (features + model) per exchange, in this process."""
    import random
    import resource

    from busted.ml import model as mlmodel
    from busted.ml.features import vector

    model = mlmodel.load(model_path or mlmodel.DEFAULT_PATH)
    rng = random.Random(0)
    exchanges = []
    for _ in range(1000):
        bursts = rng.randint(1, 200)
        gap = rng.randint(1000, 60000)
        exchanges.append({"tx_bytes": rng.randint(100, 9000), "tx_calls": rng.randint(1, 4),
                          "rx_bytes": bursts * rng.randint(50, 20000), "rx_calls": bursts * 2,
                          "rx_bursts": bursts, "burst_min": 50, "burst_max": 20000,
                          "burst_size": [bursts // 4, bursts // 2, bursts // 8, bursts // 8],
                          "first_rx_us": rng.randint(100, 3_000_000), "last_rx_us": 4_000_000,
                          "gap_sum_us": gap * (bursts - 1), "gap_sq_us": gap * gap * (bursts - 1),
                          "gap_max_us": gap * 2, "pauses": 0, "index": 1, "closing": 0})
    if rows_path:
        from busted.ml import train as trainer

        vectors = [r["features"] for r in trainer.read_rows([rows_path])]
    else:
        vectors = None
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    t0 = time.perf_counter()
    for i in range(n):
        vec = vectors[i % len(vectors)] if vectors else vector(exchanges[i % len(exchanges)])
        model.predict(vec)
    wall = time.perf_counter() - t0
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    cpu_us = cpu / n * 1e6
    click.echo(f"{n} verdicts: {wall / n * 1e6:.1f} us each (wall), {cpu_us:.1f} us CPU; "
               f"{len(model.trees)} trees, {sum(len(t.left) for t in model.trees)} nodes; "
               f"1,000 exchanges/s would use {cpu_us / 10:.1f} % of one core")
    return 0
