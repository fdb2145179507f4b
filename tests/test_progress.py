"""Progress output: bars on a terminal, one line per phase in a log or a pipe (issue 15)."""

import subprocess
import sys

from deepcompress import _progress


def test_without_a_terminal_each_phase_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = _progress.bar(total=300, desc="fine-tune", unit="step")
    for _ in range(300):
        bar.update(1)
    bar.set_postfix(loss="0.412")
    bar.close()
    bar.close()  # once only
    assert list(_progress.bar(range(3), desc="k-means", unit="layer")) == [0, 1, 2]
    for _ in _progress.bar(range(3), desc="quiet", enabled=False):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("fine-tune: 300 steps in ") and lines[0].endswith("loss=0.412")
    assert lines[1].startswith("k-means: 3 layers in ")


def test_the_demo_written_to_a_log_has_no_carriage_returns(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "deepcompress.cli", "demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\r" not in r.stdout
    assert "train reference: " in r.stderr and "retrain: " in r.stderr  # one line a phase
