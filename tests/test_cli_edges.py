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


def test_pytorch_checkpoints_encode_and_pickled_models_or_folders_are_refused(tmp_path, capsys):
    """`encode` read .safetensors only ('header too large' for a .pt file); a folder was 'no
    such file'. A state dict saved with torch.save, alone or in a training checkpoint beside
    its optimizer's and epoch, now encodes as its .safetensors twin does."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 16)).sum().backward()
    opt.step()  # an optimizer state with tensors of its own
    save_file(net.state_dict(), str(tmp_path / "m.safetensors"))
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    ckpt = {"state_dict": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}
    torch.save(ckpt, tmp_path / "ckpt.pth")
    assert _encode(tmp_path / "m.safetensors", tmp_path / "a.dcz", "--quiet") == 0
    expected = dc.load(tmp_path / "a.dcz")
    for name in ("sd.pt", "ckpt.pth"):
        assert _encode(tmp_path / name, tmp_path / f"{name}.dcz", "--quiet") == 0
        got = dc.load(tmp_path / f"{name}.dcz")
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in got)
    capsys.readouterr()
    torch.save(net, tmp_path / "whole.pt")  # a pickled module: code would run to read it
    (tmp_path / "folder").mkdir()
    for name, says in (("whole.pt", "save model.state_dict()"), ("folder", "is a folder")):
        assert _encode(tmp_path / name, tmp_path / "x.dcz", "--quiet") == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1 and "\x1b" not in err
    with pytest.raises(TypeError, match="not a Sequential"):
        dc.encode_state_dict(net, tmp_path / "y.dcz")
    with pytest.raises(TypeError, match=r"a checkpoint\? pass ckpt\['state_dict'\]"):
        dc.encode_state_dict(ckpt, tmp_path / "y.dcz")


def test_the_inputs_safetensors_metadata_comes_back_on_decode(tmp_path):
    """encode dropped it and decode wrote {"source": ...} alone, which transformers refuses (it
    wants "format": "pt")."""
    from safetensors import safe_open

    def metadata(path):
        with safe_open(str(path), "pt") as f:
            return f.metadata()

    w = {"fc.weight": torch.randn(8, 8)}
    save_file(w, str(tmp_path / "hf.safetensors"), metadata={"format": "pt", "note": "mine"})
    save_file(w, str(tmp_path / "plain.safetensors"))
    for name, expected in (("hf", {"format": "pt", "note": "mine"}), ("plain", None)):
        assert _encode(tmp_path / f"{name}.safetensors", tmp_path / f"{name}.dcz", "--quiet") == 0
        out = tmp_path / f"{name}.out.safetensors"
        assert main(["decode", str(tmp_path / f"{name}.dcz"), "-o", str(out)]) == 0
        got = metadata(out)
        assert got == expected if expected else got["format"] == "pt"


def test_warnings_and_errors_cannot_drive_the_terminal(tmp_path, capsys):
    """A checkpoint's tensor names reach warnings as they are (`_warn_lost` names the tensor):
    an escape sequence in one would act on the user's terminal."""
    src = tmp_path / "evil.safetensors"
    name = "\x1b]52;c;aGk=\x07small\x1b[2J.weight"
    save_file({"big.weight": torch.randn(64, 64), name: 1e-4 * torch.randn(16, 16)}, str(src))
    assert _encode(src, tmp_path / "e.dcz", "--quality", 2) == 0
    err = capsys.readouterr().err
    assert "small" in err and "\x1b" not in err and "\x07" not in err
