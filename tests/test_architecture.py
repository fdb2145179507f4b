"""The layering of the package: data flows one way, and `import deepcompress` stays cheap.

Every import in every module (lazy ones inside functions included) is read with `ast`; a
module may import only modules of its own layer or a lower one, never an upper one, and the
two stages `pruning` and `sharing` never import each other.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "deepcompress"

#: Lowest first. A module is named by its path in the package, a subpackage by its folder.
LAYERS = [
    ["_version", "errors", "_optional", "_progress", "devices", "figures"],
    ["coding"],  # sparse index, entropy coders, per-tensor codecs: arrays only
    ["format"],  # container, reader, writer, config files, inspect
    ["parametrizations", "targets", "settings", "distributed"],  # what the stages share
    ["pruning", "sharing", "ecsq"],  # the lossy stages (ecsq: rate-distortion sharing)
    ["encode", "checkpoint", "analysis", "retrain", "importance", "selection", "phases"],
    ["runtime"],  # the last stage: running from the compressed form
    ["api"],  # the model-level verbs that touch files
    ["schedule", "compress_report"],  # the whole schedule in one call: compress, plan
    ["pipeline", "testing", "cli", "cli_parser", "__init__"],  # the harness and the front ends
]
NEVER = {("pruning", "sharing"), ("sharing", "pruning")}


def unit(module: str) -> str:
    """`coding.cabac` -> `coding`; `api` -> `api`."""
    return module.split(".")[0]


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if unit(module) in names:
            return i
    raise AssertionError(f"module {module!r} is in no layer of tests/test_architecture.py")


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """The package modules `name` imports, as dotted names relative to the package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "deepcompress":
                mod = node.module.split(".")[1:]
            else:
                continue
            if node.module is None or not mod:  # `from . import x`: the modules x
                found.update(".".join([*mod, a.name]) for a in node.names)
            else:
                found.add(".".join(mod))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("deepcompress."):
                    found.add(a.name.removeprefix("deepcompress."))
    # `__init__` loads its names through importlib (see its _EXPORTS): count them too
    if name == "__init__":
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                found.update(v.value for v in node.values if isinstance(v, ast.Constant))
    return found


def test_every_module_imports_only_its_layer_or_lower():
    wrong = []
    for name, path in modules().items():
        mine = layer_of(name)
        for target in imports(name, path):
            if unit(target) == unit(name):
                continue
            if layer_of(target) > mine or (unit(name), unit(target)) in NEVER:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_the_import_graph_has_no_cycle_between_modules():
    mods = modules()
    graph = {n: {t for t in imports(n, p) if t in mods and t != n} for n, p in mods.items()}
    graph.pop("__init__")  # its names are loaded lazily, on first use
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for t in graph.get(n, ()):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, n, t]))
            if t not in state:
                visit(t, [*stack, n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_the_check_sees_a_violation(tmp_path):
    """The checker itself finds an upward import, relative or absolute, lazy or not."""
    path = tmp_path / "x.py"
    path.write_text(
        "from ..errors import FormatError\n"
        "def f():\n    from ..runtime import layouts\n"
        "import deepcompress.api\n"
    )
    found = imports("coding.x", path)
    assert found == {"errors", "runtime", "api"}
    assert [t for t in found if layer_of(t) > layer_of("coding.x")] != []


def test_no_module_is_too_long():
    """Files stay small enough to read in one sitting; the entropy coders (one job each,
    most of it their specification and kernels) are the exception."""
    exempt = {"coding.huffman", "coding.rans", "coding.cabac"}
    long = {
        n: len(p.read_text().splitlines())
        for n, p in modules().items()
        if n not in exempt and len(p.read_text().splitlines()) > 420
    }
    assert not long, long


def test_import_is_cheap():
    """`import deepcompress` loads neither torch, numba, matplotlib, scikit-learn nor yaml;
    the first verb loads what it needs, and the runtime's kernels stay unloaded until used."""
    code = (
        "import sys, deepcompress as dc\n"
        "heavy = ('torch', 'numba', 'matplotlib', 'sklearn', 'yaml')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "dc.prune_\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(dc.sensitivity.__module__, dc.load.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "['torch']"  # pruning needs torch, not numba
    assert lines[2] == "deepcompress.analysis deepcompress.api"


def test_submodules_the_docs_name_are_reachable_from_the_package():
    """`dc.phases.SCHEDULES` (as README and docs/SCHEDULE.md write it) failed with
    AttributeError until something imported deepcompress.phases; a name that is neither an
    export nor a submodule still raises AttributeError."""
    code = (
        "import deepcompress as dc\n"
        "print(dc.phases.SCHEDULES['prune']['sharing'])\n"
        "try:\n    dc.no_such_thing\nexcept AttributeError:\n    print('refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["auto", "refused"]
