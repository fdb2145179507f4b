"""The command line, driven as a user would: a subprocess."""

import json
import subprocess
import sys

import torch
from plots import assert_plot_png
from safetensors.torch import load_file, save_file

import deepcompress as dc


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "deepcompress.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_help_and_version():
    r = cli("--help")
    assert r.returncode == 0 and "reproduce" in r.stdout and "decode" in r.stdout
    for cmd in ("reproduce", "demo", "decode"):
        r = cli(cmd, "--help")
        assert r.returncode == 0 and "example: deepcompress" in r.stdout
    r = cli("--version")
    assert r.returncode == 0 and dc.__version__ in r.stdout


def test_demo_then_decode(tmp_path):
    r = cli("demo", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "accuracy:" in r.stdout and "ratio" in r.stdout
    # stage lines (and progress bars) go to stderr: stdout holds only the result
    assert "validation error" in r.stderr and "validation error" not in r.stdout
    report_md = (tmp_path / "report.md").read_text()
    for png in ("weights.png", "bytes.png", "accuracy.png"):
        assert f"]({png})" in report_md
        assert_plot_png(tmp_path / png)
    report = json.loads((tmp_path / "report.json").read_text())
    dcz = tmp_path / "demo.dcz"
    assert report["compressed_bytes"] == dcz.stat().st_size
    assert report["ratio"] > 8 and report["test_error"] < 6.0
    out = tmp_path / "demo.safetensors"
    r = cli("decode", str(dcz), "-o", str(out))
    assert r.returncode == 0, r.stderr
    decoded = load_file(str(out))
    for k, v in dc.load(dcz).items():
        assert torch.equal(decoded[k], v)
    assert set(decoded) == {
        "ip1.weight",
        "ip1.bias",
        "ip2.weight",
        "ip2.bias",
        "ip3.weight",
        "ip3.bias",
    }


def test_bad_input_exits_2_with_one_line(tmp_path):
    r = cli("decode", str(tmp_path / "missing.dcz"), "-o", str(tmp_path / "x.safetensors"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "missing.dcz" in r.stderr
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(b"\x89DCZ" + b"\0" * 40)
    r = cli("decode", str(bad), "-o", str(tmp_path / "x.safetensors"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error:" in r.stderr
    r = cli("reproduce", "lenet-5", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert r.returncode == 2 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    r = cli("decode", str(bad), "-o", str(bad))
    assert r.returncode == 2 and "overwrite" in r.stderr


def test_inspect_text_json_and_damage(tmp_path):
    from deepcompress.testing import mutate_section, sample_file, split

    f = tmp_path / "s.dcz"
    f.write_bytes(sample_file())
    r = cli("inspect", str(f))
    assert r.returncode == 0 and "checksums verified" in r.stdout and "0.weight" in r.stdout
    r = cli("inspect", str(f), "--json")
    d = json.loads(r.stdout)
    assert d["bytes"] == f.stat().st_size and d["checksums"] == "verified"
    shared = [t for t in d["tensors"] if t["codec"] == "shared"]
    assert shared and all(set(t["streams"]) == {"cluster", "gap"} for t in shared)
    for t in shared:
        for s in t["streams"].values():
            # Huffman: within 1 bit per symbol of the order-0 entropy (payload only)
            assert s["entropy_bits_per_symbol"] <= s["bits_per_symbol"] + 1e-9
            assert s["bits_per_symbol"] <= s["entropy_bits_per_symbol"] + 1 + 8 / s["symbols"]
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 4]))
    r = cli("inspect", str(bad))
    assert r.returncode == 2 and "checksum" in r.stderr and r.stderr.count("\n") == 1
    # damage behind valid CRCs: in a raw tensor's values no check can see it (exit 0); in a
    # Huffman code table the decoder refuses it (exit 2, one line naming the tensor)
    header, _ = split(f.read_bytes())
    raw = next(e for e in header["tensors"] if e["codec"] == "raw")
    bad.write_bytes(mutate_section(f.read_bytes(), raw["offset"], 0xFF))
    assert dc.load_bytes(bad.read_bytes())[raw["name"]].ne(dc.load(f)[raw["name"]]).any()
    r = cli("inspect", str(bad))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "checksums verified" in r.stdout and raw["name"] in r.stdout
    shared = next(e for e in header["tensors"] if e["codec"] == "shared")
    gap_table = shared["offset"] + sum(shared["parts"][:3])  # codebook, cluster table, bits
    bad.write_bytes(mutate_section(f.read_bytes(), gap_table, 0xFF))
    r = cli("inspect", str(bad))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("deepcompress: error: ")
    assert f"tensor '{shared['name']}': gap stream" in r.stderr


def test_bench_reports_every_shared_layer(tmp_path):
    from deepcompress.testing import sample_file

    f = tmp_path / "s.dcz"
    f.write_bytes(sample_file())
    r = cli("bench", str(f), "--batch", "1", "3", "--repeats", "2", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["tensor"] for row in rows] == ["0.weight", "3.weight"]  # the `shared` ones
    for row in rows:
        assert row["compressed_bytes"] < row["dense_bytes"] or row["kept"] > 0.5
        assert row["dense_ms_b3"] > 0 and row["compressed_ms_b1"] > 0
    r = cli("bench", str(tmp_path / "nope.dcz"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no such file" in r.stderr and "nope.dcz" in r.stderr


def test_sensitivity_command(tmp_path):
    from safetensors.torch import save_file

    from deepcompress.pipeline.models import DigitsMLP

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(DigitsMLP().state_dict(), str(weights))
    r = cli(
        "sensitivity", "digits-mlp", "--weights", str(weights), "--budget", "2", "--json",
        "--plot", str(tmp_path / "s.png"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    table = out["validation_error"]
    assert set(table["layers"]) == {"ip1", "ip2", "ip3"}
    assert all(v["0.0"] == table["baseline"] for v in table["layers"].values())
    assert set(out["auto_sparsity"]) == {"ip1", "ip2", "ip3"}
    assert_plot_png(tmp_path / "s.png")
    r = cli("sensitivity", "lenet-5", "--weights", str(weights))
    assert r.returncode == 2 and "does not hold lenet-5 weights" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path):
    net = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(600)])  # > a pipe buffer
    dc.save(net, tmp_path / "m.dcz")
    r = subprocess.run(
        f"'{sys.executable}' -m deepcompress.cli inspect '{tmp_path / 'm.dcz'}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.stdout.startswith(str(tmp_path / "m.dcz")) and r.stderr == ""


def test_a_device_this_machine_lacks_is_one_line_before_any_work(tmp_path):
    r = cli("demo", "--out", str(tmp_path), "--device", "cuda:99")
    assert r.returncode == 2 and "cuda:99" in r.stderr and "not available" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not list(tmp_path.iterdir())
    # several processes train on the CPU only: refused before they start
    args = ("--out", str(tmp_path), "--nproc", "2", "--device", "meta")
    r = cli("reproduce", "lenet-300-100", *args)
    assert r.returncode == 2 and "--nproc 2 trains on the CPU" in r.stderr


def test_an_output_folder_and_a_bad_config_value_are_refused_in_one_line(tmp_path, capsys):
    from deepcompress.cli import main

    src = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.randn(8, 8)}, str(src))
    (tmp_path / "adir").mkdir()
    assert main(["encode", str(src), "-o", str(tmp_path / "adir"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and ".tmp" not in err and err.count("\n") == 1
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"bits": "four"}')
    out = tmp_path / "x.dcz"
    assert main(["encode", str(src), "-o", str(out), "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bits for 'a.weight' must be an integer in 1..16" in err and "'four'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "cfg.json", "m.safetensors"]


def test_names_from_a_hostile_file_cannot_drive_the_terminal(tmp_path, capsys):
    """inspect prints names and meta with control characters escaped (an ANSI/OSC sequence
    could clear the screen or write the clipboard); decode refuses safetensors' own key."""
    from deepcompress.cli import main

    evil = "\x1b]0;pwned\x07\x1b[2Jw"
    dc.encode_state_dict({evil: torch.randn(4, 4)}, tmp_path / "e.dcz")
    dc.save(torch.nn.Linear(2, 2), tmp_path / "m.dcz", meta={"note": "\x1b]52;c;aGk=\x07"})
    for f in ("e.dcz", "m.dcz"):
        assert main(["inspect", str(tmp_path / f)]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out
    dc.encode_state_dict({"__metadata__": torch.ones(2)}, tmp_path / "s.dcz")
    assert main(["decode", str(tmp_path / "s.dcz"), "-o", str(tmp_path / "s.safetensors")]) == 2
    assert "reserves" in capsys.readouterr().err and not (tmp_path / "s.safetensors").exists()


def test_the_element_cap_is_set_by_an_environment_variable(tmp_path):
    """$DEEPCOMPRESS_MAX_ELEMENTS (read at import) caps what a file may declare, for the
    command line too: a few kB of rANS can declare 2**32 elements, ~80 GiB to decode."""
    import os

    dc.encode_state_dict({"w": torch.randn(20, 20)}, tmp_path / "w.dcz")
    env = {**os.environ, "DEEPCOMPRESS_MAX_ELEMENTS": "399"}
    run = [sys.executable, "-m", "deepcompress.cli", "inspect", str(tmp_path / "w.dcz")]
    r = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "DEEPCOMPRESS_MAX_ELEMENTS" in r.stderr
    env["DEEPCOMPRESS_MAX_ELEMENTS"] = "400"
    assert subprocess.run(run, capture_output=True, env=env, timeout=300).returncode == 0


def test_a_config_may_give_exclude_as_one_pattern(tmp_path, capsys):
    from deepcompress.cli import main
    from deepcompress.format.reader import read

    src = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.randn(8, 8), "b.weight": torch.randn(8, 8)}, str(src))
    cfg = tmp_path / "c.json"
    cfg.write_text('{"exclude": "a.weight"}')  # its characters were taken as patterns
    out = tmp_path / "m.dcz"
    assert main(["encode", str(src), "-o", str(out), "--config", str(cfg), "--quiet"]) == 0
    assert {r.name: r.codec for r in read(out).records} == {"a.weight": "raw", "b.weight": "shared"}


def test_the_flags_override_the_config_file(tmp_path, capsys):
    """`--size` over the file's quality (and `--quality` over its size) instead of 'not both';
    a `--bits-per-layer` pattern over the file's exact name it matches."""
    from deepcompress.cli import main
    from deepcompress.format.reader import read

    src = tmp_path / "m.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file(
        {"fc1.weight": torch.randn(32, 32, generator=g), "fc2.weight": torch.randn(4, 4)}, str(src)
    )
    out = tmp_path / "m.dcz"

    def encode(config: str, *flags) -> dict:
        (tmp_path / "c.json").write_text(config)
        args = ["encode", str(src), "-o", str(out), "--config", str(tmp_path / "c.json")]
        assert main([*args, "--quiet", *flags]) == 0, capsys.readouterr().err
        return read(out).meta["encode"]["fc1.weight"]

    fitted = encode('{"quality": 4}', "--size", "700")["quality"]
    assert fitted != 4 and out.stat().st_size <= 700
    assert encode('{"size": 2000}', "--quality", "4")["quality"] == 4
    assert encode('{"bits": {"fc1.weight": 4}}', "--bits-per-layer", "fc*=6")["bits"] == 6
    assert encode('{"bits": {"fc1.weight": 4}}', "--bits-per-layer", "fc2*=6")["bits"] == 4
