"""busted ml collect | train | eval, offline, on a recorded event stream."""

from __future__ import annotations

import json
import random

from ml_synthetic import rest_exchange, stream_exchange

from busted.cli import main


def write_events(path, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for n in range(40):
        stream = n % 2 == 0
        ssl = 1000 + n
        ex = stream_exchange(rng) if stream else rest_exchange(rng)
        lines.append({"event_type": "TCP_EXCHANGE", "pid": n, "conn_id": 5000 + n,
                      "plaintext_conn_id": ssl, "process_name": "python3", "exchange": ex})
        lines.append({"event_type": "TLS_DATA_WRITE", "pid": n, "conn_id": ssl,
                      "content_class": "LLM_REQUEST" if stream else "HTTP_REQUEST",
                      "llm_stream": stream})
    lines.append({"event_type": "TCP_EXCHANGE", "pid": 99, "conn_id": 1,  # nothing seen
                  "exchange": stream_exchange(rng)})
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + "not json\n")


def test_collect_train_eval(tmp_path, capsys):
    for name, seed in (("train", 1), ("held", 2)):
        write_events(tmp_path / f"{name}.jsonl", seed)
        assert main(["ml", "collect", "--input", str(tmp_path / f"{name}.jsonl"),
                     "--out", str(tmp_path / f"{name}-rows.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "train-rows.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {r["label"] for r in rows} == {"llm_stream", "http"}
    model = tmp_path / "model.json"
    assert main(["ml", "train", str(tmp_path / "train-rows.jsonl"), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["ml", "eval", "--model", str(model), "--json", str(tmp_path / "held-rows.jsonl")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 40 and scores["llm_stream_vs_rest"]["recall"] == 1.0


def test_eval_refuses_a_corrupt_model_in_one_sentence(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"format": "busted-ml-forest", "version": 7}')
    (tmp_path / "rows.jsonl").write_text("")
    assert main(["ml", "eval", "--model", str(tmp_path / "bad.json"), str(tmp_path / "rows.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("busted: the model ") and "version 7" in err and "Traceback" not in err
