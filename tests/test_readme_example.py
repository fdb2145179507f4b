"""examples/compress_own_model.py (the README's Python example on a user's own CNN)."""

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
