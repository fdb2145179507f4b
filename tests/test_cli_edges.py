"""`deepcompress encode` as users meet it: a config file's null, warnings under --quiet, a run
killed with SIGTERM, a checkpoint holding a dtype the file cannot hold."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

import deepcompress as dc
from deepcompress.cli import main


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "m.safetensors"
    save_file({"big.weight": torch.randn(128, 128), "small.weight": 0.01 * torch.randn(32, 32)},
              str(src))  # fmt: skip
    return src


def _encode(src, out, *flags) -> int:
    return main(["encode", str(src), "-o", str(out), *map(str, flags)])


def test_a_config_files_null_means_what_none_means_in_the_api(checkpoint, tmp_path):
    """`{"quality": null}` (store as is) and `{"bits": null}` (kept weights at full precision)
    were dropped: the defaults applied instead (quality 8; 8-bit k-means)."""
    original = load_file(str(checkpoint))
    for name, cfg, check in (
        ("q", {"quality": None}, lambda d: torch.equal(d, original["big.weight"])),
        ("qp", {"quality": {"*": None, "small.*": 10}},
         lambda d: torch.equal(d, original["big.weight"])),
        ("b", {"sparsity": 0.5, "bits": None}, lambda d: d.unique().numel() > 1000),
    ):  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(cfg))
        assert _encode(checkpoint, tmp_path / f"{name}.dcz", "--config", path, "--quiet") == 0
        assert check(dc.load(tmp_path / f"{name}.dcz")["big.weight"]), cfg


def test_warnings_are_one_line_and_quiet_silences_them(checkpoint, tmp_path, capsys):
    """small.weight is 100x below the model's scale: quality 2 leaves it lost, and encode
    says so; it printed Python's two-line warning (with a line of cli.py), also with --quiet."""
    assert _encode(checkpoint, tmp_path / "a.dcz", "--quality", 2) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "small.weight" in line]
    assert len(warned) == 1 and warned[0].startswith("deepcompress: warning: ")
    assert "cli.py" not in err and "encode_state_dict(" not in err
    assert _encode(checkpoint, tmp_path / "b.dcz", "--quality", 2, "--quiet") == 0
    assert capsys.readouterr().err == ""


def test_sigterm_while_writing_removes_the_temporary_file(tmp_path):
    """SIGTERM (a job scheduler's kill, `timeout`) left the hidden temporary file beside OUT:
    the CLI now takes it as Ctrl-C, whose clean-up removes it."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from deepcompress import cli
        from deepcompress.format.writer import atomic_path

        def killed(args):
            with atomic_path({str(tmp_path / "out.dcz")!r}) as tmp:
                tmp.write_bytes(b"partial")
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pthread_sigmask(signal.SIG_BLOCK, [])  # the handler runs by here
            return 0

        cli.COMMANDS["inspect"] = killed
        sys.exit(cli.main(["inspect", "whatever.dcz"]))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 1 and "interrupted" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unstorable_dtype_is_refused_naming_the_tensor(tmp_path, capsys):
    """A float8 tensor failed inside torch ('isfinite not implemented for Float8_e4m3fn',
    exit 1); now one line naming it, exit 2, before any work."""
    src = tmp_path / "f8.safetensors"
    save_file({"w": torch.randn(16, 16), "scale": torch.randn(16, 16).to(torch.float8_e5m2)},
              str(src))  # fmt: skip
    assert _encode(src, tmp_path / "o.dcz", "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith("deepcompress: error: 'scale': dtype torch.float8_e5m2 cannot be")
    assert not (tmp_path / "o.dcz").exists()
