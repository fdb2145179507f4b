"""The compressed runtime in a real process: its threads (torch's count, a fork()ed child, two
Python threads at once), autotune_'s plans for 3-D inputs, the inputs and the gradients it
refuses, and the warning for codebooks the C kernels cannot take."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.runtime import CompressedConv2d, CompressedLinear, autotune_, layers, simd
from deepcompress.runtime.layouts import CompressedMatrix


def shared_file(tmp_path, build, sparsity=0.9, bits=5, name="m.dcz"):
    torch.manual_seed(0)
    net = build()
    dc.prune_(net, sparsity=sparsity)
    dc.quantize_(net, bits=bits)
    path = tmp_path / name
    dc.save(net, path)
    return path


def run_python(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    """`code` in a new interpreter (its OpenMP and thread state its own), with `env` added."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


PROCESS_SETUP = """
    import multiprocessing as mp, os, threading, torch
    from torch import nn
    import deepcompress as dc
    build = lambda: nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 64))
    torch.manual_seed(0)
    net = build()
    dc.prune_(net, sparsity=0.8)
    dc.quantize_(net, bits=5)
    dc.save(net, "m.dcz")
    dense = dc.load("m.dcz", model=build()).eval()
    comp = dc.load("m.dcz", model=build(), runtime="compressed").eval()
    x = torch.randn(64, 512)
    with torch.no_grad():
        ref = dense(x)
"""


@pytest.mark.parametrize("simd_env", ["auto", "0"])  # the C kernels' pool, the numba loops'
def test_a_forked_child_runs_the_model_after_its_parent_did(tmp_path, simd_env):
    """multiprocessing's fork (gunicorn's preload): the parent runs the compressed model on two
    threads, then a forked child runs it too. numba's OpenMP layer killed that child."""
    code = (
        PROCESS_SETUP
        + """
    torch.set_num_threads(2)
    with torch.no_grad():
        assert (comp(x) - ref).abs().max() < 1e-4
    def child(q):
        with torch.no_grad():
            q.put(float((comp(x) - ref).abs().max()) + float((comp(x[:1]) - ref[:1]).abs().max()))
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    assert q.get(timeout=5) < 1e-4
    with torch.no_grad():  # and the parent still runs it on its threads
        assert (comp(x) - ref).abs().max() < 1e-4
    print("ok")
    """
    )
    r = run_python(code, tmp_path, DEEPCOMPRESS_SIMD=simd_env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


@pytest.mark.parametrize("simd_env", ["auto", "0"])
def test_two_python_threads_run_one_model_at_once(tmp_path, simd_env):
    """Under numba's workqueue layer (its fallback without TBB or OpenMP), two Python threads
    calling the model aborted the process; the outputs must also stay right."""
    code = (
        PROCESS_SETUP
        + """
    torch.set_num_threads(2)
    bad = []
    def work():
        with torch.no_grad():
            for i in range(30):
                y = comp(x[: 1 + i % 2 * 63])
                bad.append(float((y - ref[: len(y)]).abs().max()) > 1e-4)
    threads = [threading.Thread(target=work) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(bad) == 90 and not any(bad)
    print("ok")
    """
    )
    r = run_python(code, tmp_path, DEEPCOMPRESS_SIMD=simd_env, NUMBA_THREADING_LAYER="workqueue")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_the_runtime_leaves_torchs_thread_count_and_starts_no_thread_at_one(tmp_path):
    """torch.set_num_threads(1) (or OMP_NUM_THREADS=1): the compressed model runs on the
    calling thread alone, and torch's count stays 1 (numba's OpenMP layer started its own
    threads and set the count libgomp shares with torch to its own)."""
    code = (
        PROCESS_SETUP
        + """
    torch.set_num_threads(1)
    tasks = lambda: len(os.listdir("/proc/self/task"))
    before = tasks()
    with torch.no_grad():
        for _ in range(3):
            comp(x), comp(x[:1])
    assert torch.get_num_threads() == 1, torch.get_num_threads()
    assert tasks() == before, (before, tasks())
    print("ok")
    """
    )
    for simd_env in ("auto", "0"):
        r = run_python(code, tmp_path, DEEPCOMPRESS_SIMD=simd_env)
        assert r.returncode == 0 and r.stdout.strip() == "ok", (simd_env, r.stderr[-3000:])


@pytest.fixture
def torch_threads():
    """Sets torch's thread count for the test, and puts the old one back."""
    old = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(old)


@pytest.mark.skipif(not simd.available(), reason="needs the C kernels")
def test_the_c_kernels_run_on_torchs_thread_count(monkeypatch, torch_threads):
    seen = []
    real = simd._run
    monkeypatch.setattr(simd, "_run", lambda *a: (seen.append(a[2]), real(*a))[1])
    w = torch.randn(512, 512) * (torch.rand(512, 512) < 0.2)
    m = CompressedMatrix.from_dense(w.round(decimals=1), "index")
    x = torch.randn(64, 512)
    for n in (1, 2, 3):
        torch_threads(n)
        assert torch.allclose(m.matmul_t(x), x @ m.dense().T, atol=1e-4)
    m.threads[64] = 3  # autotune's count: never more than torch's
    torch_threads(2)
    m.matmul_t(x)
    assert seen == [1, 2, 3, 2]


def test_the_numba_loops_run_on_torchs_thread_count(monkeypatch, torch_threads):
    from deepcompress.runtime import kernels, pool

    seen = []
    real = pool.run_rows
    monkeypatch.setattr(kernels, "run_rows", lambda *a: (seen.append(a[3]), real(*a))[1])
    w = (torch.randn(512, 512) * (torch.rand(512, 512) < 0.2)).round(decimals=1)
    x = torch.randn(64, 512)
    for layout in ("entries", "index"):
        m = CompressedMatrix.from_dense(w, layout)
        for n in (1, 2, 3):
            torch_threads(n)
            y = m.matmul_t(x) if layout == "entries" else m.matmul_t(x, use_simd=False)
            assert torch.allclose(y, x @ w.T, atol=1e-4)
            assert torch.equal(m.dense(), w)
    assert seen == [1, 1, 2, 2, 3, 3] + [1, 2, 3]  # "index": dense() is numpy


def test_autotune_plans_what_3d_inputs_run(tmp_path, monkeypatch):
    """A (B, T, F) input: autotune_ times both modes and the plan is read per batch size B, so
    a planned "dense" runs dense (the forward looked the plan up by B*T)."""
    build = lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))  # noqa: E731
    path = shared_file(tmp_path, build, sparsity=0.0, bits=8)
    comp = dc.load(path, model=build(), runtime="compressed").eval()
    modes = []
    real = layers._matmul
    monkeypatch.setattr(
        layers, "_matmul", lambda wc, x, mode: (modes.append(mode), real(wc, x, mode))[1]
    )
    autotune_(comp, torch.randn(4, 16, 64), batch_sizes=(4,), repeats=1)
    assert {"dense", "compressed"} <= set(modes)  # both timed on (4, 16, 64) inputs
    for m in (comp[0], comp[2]):
        m.plan = {4: "dense"}
    modes.clear()
    x = torch.randn(4, 16, 64)
    with torch.no_grad():
        y = comp(x)
    assert modes == ["dense", "dense"]
    dense = dc.load(path, model=build()).eval()
    with torch.no_grad():
        assert torch.allclose(y, dense(x), atol=1e-5)


def test_a_backward_through_a_compressed_layer_raises(tmp_path):
    """The layers are inference-only: a dense layer before one got grad None with no word. Now
    the backward through it raises; inference without torch.no_grad() still runs."""
    build = lambda: nn.Sequential(  # noqa: E731
        nn.Conv1d(4, 4, 1), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2)
    )
    torch.manual_seed(0)
    net = build()
    dc.prune_(net, sparsity={"2": 0.8})
    dc.quantize_(net, bits={"2": 4})
    dc.save(net, tmp_path / "m.dcz")
    comp = dc.load(tmp_path / "m.dcz", model=build(), runtime="compressed")
    dense = dc.load(tmp_path / "m.dcz", model=build())
    assert isinstance(comp[2], CompressedLinear)
    x = torch.randn(3, 4, 8)
    y = comp(x)  # grad enabled, a dense layer with parameters before: the inference runs
    assert torch.allclose(y, dense(x), atol=1e-5)
    with pytest.raises(RuntimeError, match="CompressedLinear .*inference-only.*no_grad"):
        y.square().sum().backward()
    with pytest.raises(RuntimeError, match="inference-only"):
        comp(x.requires_grad_()).sum().backward()
    with torch.no_grad():
        assert not comp(x).requires_grad
    comp[0].requires_grad_(False)  # nothing before it needs a gradient: training after it runs
    comp(x.detach()).square().sum().backward()
    assert comp[4].weight.grad is not None


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_inputs_torch_refuses_are_refused(tmp_path, kind):
    """Integer, bool and complex inputs (torch's layers refuse them against a float weight; ours
    rounded the outputs to integers) and a 0-D input (an IndexError) raise RuntimeError."""
    if kind == "linear":
        build, shape = (lambda: nn.Sequential(nn.Linear(16, 4))), (2, 16)
    else:
        build, shape = (lambda: nn.Sequential(nn.Conv2d(3, 4, 3))), (2, 3, 5, 5)
    path = shared_file(tmp_path, build, sparsity=0.5, bits=4)
    dense = dc.load(path, model=build())
    comp = dc.load(path, model=build(), runtime="compressed")
    assert isinstance(comp[0], (CompressedLinear, CompressedConv2d))
    for x in (
        torch.randint(0, 3, shape),
        torch.ones(shape, dtype=torch.bool),
        torch.randn(shape, dtype=torch.complex64),
        torch.tensor(1.0),
    ):
        with pytest.raises(RuntimeError):
            dense(x)
        with torch.no_grad(), pytest.raises(RuntimeError):
            comp(x)
    with torch.no_grad():  # the floating-point dtypes still run, in the input's dtype
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            x = torch.randn(shape)
            y = comp(x.to(dtype))
            assert y.dtype == dtype
            assert torch.allclose(y.float(), dense(x), atol=0.05, rtol=0.05)


@pytest.mark.skipif(not simd.available(), reason="the warning is for the C kernels' limit")
def test_load_warns_of_codebooks_the_c_kernels_cannot_take(tmp_path, recwarn):
    build = lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))  # noqa: E731
    torch.manual_seed(0)
    net = build()
    dc.quantize_(net, bits={"0": 9, "2": 5})
    dc.save(net, tmp_path / "m.dcz")
    with pytest.warns(UserWarning, match=r"0 \(\d+ values\).*at most 256 .*bits <= 8") as got:
        comp = dc.load(tmp_path / "m.dcz", model=build(), runtime="compressed")
    assert len(got) == 1 and "2 (" not in str(got[0].message)
    assert comp[0].weight_c.layout == "entries" and comp[2].weight_c.layout != "entries"
    recwarn.clear()
    dc.load(shared_file(tmp_path, build, name="b5.dcz"), model=build(), runtime="compressed")
    assert not [w for w in recwarn if "256" in str(w.message)]
