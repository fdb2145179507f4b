"""Optional extras: a feature whose extra is missing says, in one line, which to install."""

import builtins

import pytest

from deepcompress import _optional, cli
from deepcompress.format.config import load_config


@pytest.fixture
def without(monkeypatch):
    """Make `import NAME` (and its submodules) fail, as where the extra is not installed."""
    missing: set[str] = set()
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in missing:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    real_import_module = _optional.importlib.import_module

    def fake_import_module(name, package=None):
        if name.split(".")[0] in missing:
            raise ImportError(f"No module named {name!r}")
        return real_import_module(name, package)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(_optional.importlib, "import_module", fake_import_module)
    return missing


def test_a_yaml_config_without_pyyaml_names_the_config_extra(tmp_path, without, capsys):
    without.add("yaml")
    (tmp_path / "c.yaml").write_text("bits: 6\n")
    with pytest.raises(_optional.MissingExtra, match=r"pip install 'deepcompress\[config\]'"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text('{"bits": 6}')
    assert load_config(tmp_path / "c.json") == {"bits": 6}  # JSON needs nothing
    src = tmp_path / "m.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.randn(4, 4)}, str(src))
    code = cli.main(["encode", str(src), "-o", str(tmp_path / "m.dcz"), "--config",
                     str(tmp_path / "c.yaml")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "deepcompress[config]" in err[0]


def test_plots_and_the_demo_name_their_extras(tmp_path, without):
    without.update({"matplotlib", "sklearn"})
    import deepcompress as dc
    from deepcompress.pipeline.data import load_digits

    table = {"baseline": 1.0, "sparsities": [0.0, 0.5], "layers": {"a": {0.0: 1.0, 0.5: 2.0}}}
    with pytest.raises(_optional.MissingExtra, match=r"deepcompress\[plot\]"):
        dc.plot_sensitivity(table, tmp_path / "s.png")
    with pytest.raises(_optional.MissingExtra, match=r"deepcompress\[demo\]"):
        load_digits(0)
    assert not (tmp_path / "s.png").exists()
