"""The examples: compress_own_model.py (the primitives) and compress_cnn.py (one call)."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "compress_own_model.py"


def test_example_compresses_a_user_model(tmp_path):
    spec = importlib.util.spec_from_file_location("compress_own_model", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    r = example.main(tmp_path)
    assert r["decoded_val_accuracy"] == r["shared_val_accuracy"]  # the file is the model
    assert r["decoded_val_accuracy"] > r["dense_val_accuracy"] - 0.03
    assert r["fc1_sparsity"] >= 0.9 - 1e-3
    assert r["ratio"] > 8 and (tmp_path / "mynet.dcz").stat().st_size == r["bytes"]


def test_one_call_example_on_a_cnn_with_batchnorm(tmp_path):
    """examples/compress_cnn.py (`dc.compress` on a CNN with BatchNorm and an ordinary loop),
    on the bundled digits with short training."""
    path = EXAMPLE.parent / "compress_cnn.py"
    spec = importlib.util.spec_from_file_location("compress_cnn", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = ["--digits", "--epochs", "15", "--retrain-epochs", "2", "--budget", "1.0"]
    r = example.main([*args, "--out", str(tmp_path)])
    assert (tmp_path / "cnn.dcz").stat().st_size == r["bytes"]
    assert r["val_error"] <= r["dense_val_error"] + 1.0 + 1e-6
    assert r["ratio"] > 10
