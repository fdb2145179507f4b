"""Rate-distortion weight sharing (`deepcompress.ecsq`) and its use by `encode_state_dict`:
checked against exhaustive searches on small inputs."""

import itertools
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import deepcompress as dc
from deepcompress import ecsq as E
from deepcompress.encode import POSTTRAIN_QUALITY
from deepcompress.format import reader


def levels_of(codebook: np.ndarray) -> np.ndarray:
    """Symbol s's value: 0 for s = 0, codebook[s - 1] otherwise."""
    return np.concatenate([[0.0], codebook.astype(np.float64)])


def cost(x, w, q: E.Quantized, lam) -> float:
    """J of a result, computed from scratch: weighted squared error, ideal code lengths from
    the symbols' counts, the codebook's bits for each non-zero level used."""
    rec = levels_of(q.codebook)[q.symbols]
    counts = np.bincount(q.symbols)
    p = counts[counts > 0] / len(x)
    bits = -(counts[counts > 0] * np.log2(p)).sum()
    per_level = E.GRID_LEVEL_BITS if q.step is not None else E.CODEBOOK_BITS
    bits += per_level * np.count_nonzero(counts[1:])
    return float((w * (x - rec) ** 2).sum() + lam * bits)


#: How far above the exhaustive optimum Lloyd's local search may end on these small inputs
TOLERANCE = 1.10


def optimum(x: np.ndarray, lam: float) -> float:
    """The least J over every quantizer of sorted x: each partition into contiguous runs, each
    run either at its mean (a codebook level) or at zero (free of codebook bits)."""
    x = np.sort(x)
    n, best = len(x), math.inf
    for cuts in itertools.product((0, 1), repeat=n - 1):
        bounds = [0, *[i + 1 for i, c in enumerate(cuts) if c], n]
        runs = [x[a:b] for a, b in zip(bounds, bounds[1:])]
        for zero in range(-1, len(runs)):
            d = bits = 0.0
            for j, r in enumerate(runs):
                c = 0.0 if j == zero else r.mean()
                d += ((r - c) ** 2).sum()
                bits += -len(r) * math.log2(len(r) / n) + (0 if j == zero else E.CODEBOOK_BITS)
            best = min(best, d + lam * bits)
    return best


def test_assign_is_the_exact_argmin_for_any_costs():
    rng = np.random.default_rng(0)
    for trial in range(30):
        k = int(rng.integers(1, 12))
        levels = np.sort(rng.normal(size=k))
        costs = rng.exponential(size=k) * rng.choice([0.01, 1.0, 10.0])
        x = rng.normal(size=200) * 2
        w = rng.exponential(size=200) if trial % 2 else np.ones(1)
        labels, regret = E.assign(x, w, levels, costs)
        table = (w[:, None] if len(w) > 1 else w[0]) * (x[:, None] - levels) ** 2 + costs
        np.testing.assert_allclose(table[np.arange(200), labels], table.min(1))
        second = np.sort(table, axis=1)[:, 1] if k > 1 else np.full(200, np.inf)
        np.testing.assert_allclose(regret, second - table.min(1))


@pytest.mark.parametrize("seed", range(6))
def test_ecsq_reaches_the_exhaustive_optimum(seed):
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_t(3, size=11) * 0.5, 3)
    for lam in (1e-4, 1e-3, 1e-2, 0.05):
        q = E.ecsq(x, lam)
        got = cost(x, np.ones(1), q, lam)
        assert got == pytest.approx(q.cost)
        best = optimum(x, lam)
        assert best <= got * (1 + 1e-9) and got <= best * TOLERANCE, (lam, got, best)


@pytest.mark.parametrize("grid", [True, False])
def test_codebook_symbols_and_cost_agree_and_zero_is_a_level(grid):
    rng = np.random.default_rng(1)
    x = rng.laplace(size=20000) * 0.02
    lam = E.lam_for_step(0.01)
    q = E.ecsq(x, lam, grid=grid)
    cb = q.codebook
    assert cb.dtype == np.float32 and np.all(np.diff(cb) > 0) and 0 not in cb
    assert q.symbols.min() >= 0 and q.symbols.max() == len(cb)
    assert 0.2 < np.mean(q.symbols == 0) < 0.9  # zero is the most likely level of Laplace data
    assert cost(x, np.ones(1), q, lam) == pytest.approx(q.cost)
    if grid:  # the codebook is float32(integers * step), as the file stores it
        m = np.rint(cb.astype(np.float64) / q.step)
        assert np.array_equal((m * q.step).astype(np.float32), cb)
    # never worse than each value at its nearest level of the same codebook
    levels = levels_of(cb)
    nearest = np.abs(x[:, None] - levels).argmin(1)
    assert q.cost <= cost(x, np.ones(1), E.Quantized(cb, nearest, q.step, 0), lam) * (1 + 1e-9)


def test_rate_falls_and_error_rises_with_lambda_and_beats_a_plain_grid():
    rng = np.random.default_rng(2)
    x = rng.standard_t(4, size=50000) * 0.05
    previous = None
    for s in (0.002, 0.01, 0.05):
        lam = E.lam_for_step(s)
        q = E.quantize(x, lam)
        d, bits, j = E.lagrangian(x, np.ones(1), levels_of(q.codebook), q.symbols, lam, 0)
        # a uniform grid of the same step, nearest level: never a lower Lagrangian cost
        grid, g_sym = np.unique(np.rint(x / s), return_inverse=True)
        assert q.cost <= E.lagrangian(x, np.ones(1), grid * s, g_sym, lam, 2)[2] * (1 + 1e-6)
        if previous is not None:
            assert bits < previous[1] and d > previous[0]
        previous = (d, bits)


def test_weights_buy_precision_where_they_are_large():
    rng = np.random.default_rng(3)
    x = rng.normal(size=40000) * 0.1
    w = np.where(np.arange(40000) < 20000, 100.0, 1.0)
    q = E.quantize(x, E.lam_for_step(0.05), w)
    err = (x - levels_of(q.codebook)[q.symbols]) ** 2
    # one codebook serves both halves: the light ones go to likelier (cheaper) levels
    assert err[:20000].mean() * 2 < err[20000:].mean()
    same = E.quantize(x, 1e-3, np.ones_like(x))
    assert np.array_equal(same.symbols, E.quantize(x, 1e-3).symbols)
    zero_weight = E.quantize(x, 1e-3, np.zeros_like(x))
    assert np.all(zero_weight.symbols == 0)  # an error that costs nothing: every value at zero


def test_edge_cases_and_bad_input():
    empty = E.quantize(np.zeros(0), 1.0)
    assert empty.codebook.size == 0 and empty.symbols.size == 0
    q = E.quantize(np.full(100, 0.25), 1e-6)
    assert len(q.codebook) == 1 and np.all(q.symbols == 1)
    assert abs(q.codebook[0] - 0.25) <= (q.step or 0) / 2 + 1e-7
    q = E.quantize(np.zeros(50), 1.0)
    assert q.codebook.size == 0 and np.all(q.symbols == 0)
    q = E.quantize(np.array([1e30, -1e30, 3.0]), 1e-30)  # a huge range: the grid stays exact
    assert np.all(np.isfinite(q.codebook)) and len(q.codebook) == 2
    for lam in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lam"):
            E.ecsq(np.ones(3), lam)
    with pytest.raises(ValueError, match="NaN"):
        E.ecsq(np.array([1.0, np.nan]), 1.0)
    with pytest.raises(ValueError, match="weights"):
        E.ecsq(np.ones(3), 1.0, np.array([1.0, -1.0, 1.0]))


def test_at_most_max_levels(monkeypatch):
    monkeypatch.setattr(E, "MAX_LEVELS", 50)
    x = np.random.default_rng(4).normal(size=5000)
    for grid in (True, False):
        q = E.ecsq(x, 1e-9, grid=grid)
        assert len(q.codebook) == 50 and q.symbols.max() == 50


def test_equal_slopes_match_a_brute_force_allocation():
    """One lambda for all tensors spends bits where they buy the most: no allocation of
    per-tensor lambdas (from a grid) gives less total error for no more total bits."""
    rng = np.random.default_rng(5)
    tensors = [rng.normal(size=3000) * s for s in (0.02, 0.1, 0.5)]
    grid = [E.lam_for_step(s) for s in np.geomspace(0.002, 0.5, 12)]
    points = []  # per tensor, per lambda: (distortion, bits)
    for x in tensors:
        row = []
        for lam in grid:
            q = E.quantize(x, lam)
            d, bits, _ = E.lagrangian(x, np.ones(1), levels_of(q.codebook), q.symbols, lam, 2)
            row.append((d, bits))
        points.append(row)
    for i in range(len(grid)):
        d_eq = sum(points[t][i][0] for t in range(3))
        r_eq = sum(points[t][i][1] for t in range(3))
        for combo in itertools.product(range(len(grid)), repeat=3):
            r = sum(points[t][c][1] for t, c in enumerate(combo))
            d = sum(points[t][c][0] for t, c in enumerate(combo))
            assert not (r <= r_eq and d < d_eq * 0.97), (i, combo)


# --- through encode_state_dict and the command line ------------------------------------------


def state():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(200, 150, generator=g) * 0.05,
        "b.weight": torch.randn(64, 200, generator=g) * 0.2,
        "b.bias": torch.randn(64, generator=g),
    }


def relative_error(out, sd, key):
    return float(((out[key] - sd[key]) ** 2).sum() / (sd[key] ** 2).sum())


def test_quality_trades_bytes_for_error_and_is_recorded(tmp_path):
    sd = state()
    sizes, errors = [], []
    for q in (2, 6, 10):
        path = tmp_path / f"q{q}.dcz"
        sizes.append(dc.encode_state_dict(sd, path, quality=q))
        out = dc.load(path)
        assert torch.equal(out["b.bias"], sd["b.bias"])
        errors.append(relative_error(out, sd, "a.weight"))
        enc = reader.read(path).meta["encode"]
        assert enc["a.weight"]["quality"] == q and enc["a.weight"]["lam"] > 0
    assert sizes[0] < sizes[1] < sizes[2] and errors[0] > errors[1] > errors[2]
    # each +1 of quality is about a bit a weight, and the error about 4x smaller
    per_weight = (sizes[2] - sizes[1]) * 8 / (200 * 150 + 64 * 200) / 4
    assert 0.7 < per_weight < 1.3 and 100 < errors[1] / errors[2] < 400


def test_default_is_rate_distortion_and_near_lossless(tmp_path):
    sd = state()
    dc.encode_state_dict(sd, tmp_path / "d.dcz")
    out = dc.load(tmp_path / "d.dcz")
    enc = reader.read(tmp_path / "d.dcz").meta["encode"]
    assert enc["a.weight"]["quality"] == POSTTRAIN_QUALITY
    assert relative_error(out, sd, "a.weight") < 1e-4


def test_size_gives_the_best_quality_that_fits(tmp_path):
    sd = state()
    target = 30000
    size = dc.encode_state_dict(sd, tmp_path / "s.dcz", size=target)
    assert size <= target and (tmp_path / "s.dcz").stat().st_size == size
    q = reader.read(tmp_path / "s.dcz").meta["encode"]["a.weight"]["quality"]
    step = 2 / 2**6  # the search's resolution: quality steps of 2, halved 6 times
    assert dc.encode_state_dict(sd, tmp_path / "t.dcz", quality=q) == size  # the same file
    assert dc.encode_state_dict(sd, tmp_path / "u.dcz", quality=q + 2 * step) > target
    dc.encode_state_dict(sd, tmp_path / "big.dcz", size=10**9)  # everything fits: the top
    assert reader.read(tmp_path / "big.dcz").meta["encode"]["a.weight"]["quality"] == 24
    with pytest.raises(ValueError, match="at most 100 bytes"):
        dc.encode_state_dict(sd, tmp_path / "x.dcz", size=100)
    with pytest.raises(ValueError, match="not both"):
        dc.encode_state_dict(sd, tmp_path / "x.dcz", size=target, quality=4)
    assert not (tmp_path / "x.dcz").exists()


def test_overrides_beside_quality(tmp_path):
    sd = state()
    path = tmp_path / "o.dcz"
    dc.encode_state_dict(sd, path, bits={"a.*": 3}, quality={"b.weight": 4})
    enc = reader.read(path).meta["encode"]
    assert enc["a.weight"] == {"sparsity": 0.0, "bits": 3}
    assert enc["b.weight"]["quality"] == 4
    assert len(dc.load(path)["a.weight"].unique()) <= 8
    dc.encode_state_dict(sd, path, size=140000, quality={"a.weight": None})
    out, enc = dc.load(path), reader.read(path).meta["encode"]
    assert torch.equal(out["a.weight"], sd["a.weight"]) and "a.weight" not in enc
    for bad in (-9, 25, "high", True):
        with pytest.raises(ValueError, match="quality"):
            dc.encode_state_dict(sd, path, quality=bad)


def test_cli_quality_and_size(tmp_path):
    sd = state()
    save_file(sd, tmp_path / "m.safetensors")

    def run(*flags):
        cmd = [sys.executable, "-m", "deepcompress.cli", "encode", str(tmp_path / "m.safetensors")]
        cmd += ["-o", str(tmp_path / "m.dcz"), "--quiet", *flags]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    r = run("--size", "25000")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes"] <= 25000
    r = run("--quality", "3")
    assert (
        r.returncode == 0
        and reader.read(tmp_path / "m.dcz").meta["encode"]["a.weight"]["quality"] == 3
    )
    r = run("--size", "50")
    assert r.returncode == 2 and "at most 50 bytes" in r.stderr


# --- the grid codebook in the file ------------------------------------------------------------


def test_grid_codebook_round_trips_and_damage_is_refused():
    from deepcompress.coding import codec
    from deepcompress.errors import FormatError

    for m in ([0], [-5, -4, 0, 7, 1000, 2**40], list(range(-300, 300)), [-(2**62), 2**62 - 1]):
        m = np.array(m, dtype=np.int64)
        part = codec.encode_grid(m)
        got = codec.codebook({"k": len(m), "grid": 0.25}, [part])
        assert np.array_equal(got, (m.astype(np.float64) * 0.25).astype(np.float32))
    assert len(codec.encode_grid(np.arange(-3000, 3000))) < 100  # about nothing a level
    good = codec.encode_grid(np.array([1, 2, 3]))
    import zlib

    for bad, match in (
        (b"junk", "zlib"),
        (good[:-2], "truncated"),
        (good + b"x", "truncated|too long"),
        (zlib.compress(bytes([1, 2])), "k integers"),  # two varints for k = 3
        (zlib.compress(bytes([0x80] * 9 + [1, 0, 0])), "63 bits"),
        (zlib.compress(bytes(40)), "too long|k integers"),
    ):
        with pytest.raises(FormatError, match=match):
            codec.codebook({"k": 3, "grid": 0.5}, [bad])
    with pytest.raises(FormatError, match="NaN or infinity"):
        codec.codebook({"k": 3, "grid": 1e38}, [codec.encode_grid(np.array([1, 2, 30]))])
    for step in (0, -1.0, float("inf"), "0.5", True):
        entry = {"k": 3, "index_bits": 2, "entries": 3, "weight_symbols": 4, "gap_symbols": 1}
        with pytest.raises(FormatError, match="grid"):
            codec.check_params("shared", {**entry, "grid": step}, "float32", 10, "t")
    with pytest.raises(ValueError, match="not on the grid"):
        codec.encode_shared_entries(
            np.arange(2), np.array([1, 2]), torch.tensor([0.1, 0.3]), grid=0.25
        )


def test_quality_files_run_in_the_compressed_runtime(tmp_path):
    def net():
        return torch.nn.Sequential(torch.nn.Linear(30, 40), torch.nn.ReLU(), torch.nn.Linear(40, 5))

    torch.manual_seed(0)
    dc.encode_state_dict(net().state_dict(), tmp_path / "n.dcz", quality=5)
    assert any("grid" in r.params for r in reader.read(tmp_path / "n.dcz").records)
    dense = dc.load(tmp_path / "n.dcz", model=net())
    fast = dc.load(tmp_path / "n.dcz", model=net(), runtime="compressed")
    x = torch.randn(7, 30)
    torch.testing.assert_close(fast(x), dense(x), rtol=1e-5, atol=1e-5)


def test_quantize_with_quality_prunes_by_rate_distortion_and_fine_tunes(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    dense = [m.weight.detach().clone() for m in (net[0], net[2])]
    dc.quantize_(net, quality=2)
    for m, w in zip((net[0], net[2]), dense):
        zero = m.weight == 0
        assert 0.05 < float(zero.float().mean()) < 0.95  # zero is a level: those are pruned
        assert float(w[zero].abs().max()) < float(w[~zero].abs().max())
        assert len(m.weight.unique()) > 3
    x, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [m.weight.detach().clone() for m in (net[0], net[2])]
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    for m, b in zip((net[0], net[2]), before):  # centroids move, pruned weights stay zero
        assert not torch.equal(m.weight, b) and torch.equal(m.weight == 0, b == 0)
    dc.save(net, tmp_path / "q.dcz")
    fresh = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    dc.load(tmp_path / "q.dcz", model=fresh)
    torch.testing.assert_close(fresh(x), net(x))
    with pytest.raises(ValueError, match="not both"):
        dc.quantize_(torch.nn.Linear(3, 3), bits=4, quality=3)
    with pytest.raises(ValueError, match="quality"):
        dc.quantize_(torch.nn.Sequential(torch.nn.Linear(3, 3)), quality=99)


def test_rd_zero_is_plain_rounding_and_rd_moves_toward_ecsq(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.laplace(size=30000) * 0.05
    lam = E.lam_for_step(0.02)
    s = E.step(lam)
    q0 = E.quantize(x, lam, rd=0)
    ref = (np.rint(x / s) * s).astype(np.float32)  # the slow reference: round to the grid
    np.testing.assert_array_equal(levels_of(q0.codebook)[q0.symbols].astype(np.float32), ref)
    assert q0.symbols.dtype == np.uint16  # what bounds encode's memory
    slices = E._slices
    monkeypatch.setattr(E, "_slices", lambda n: slices(n, 7))  # the two passes, by slices
    q_sliced = E.quantize(x, lam, rd=0)
    np.testing.assert_array_equal(q_sliced.symbols, q0.symbols)
    np.testing.assert_array_equal(q_sliced.codebook, q0.codebook)
    assert q_sliced.cost == pytest.approx(q0.cost, rel=1e-12)
    monkeypatch.undo()
    zeros = [np.mean(E.quantize(x, lam, rd=r).symbols == 0) for r in (0, 0.5, 1)]
    assert zeros[0] < zeros[1] < zeros[2]  # the dead zone grows with the rate's weight
    with pytest.raises(ValueError, match="rd"):
        E.quantize(x, lam, rd=1.5)
    sd = state()
    sizes = [dc.encode_state_dict(sd, tmp_path / f"r{r}.dcz", quality=4, rd=r) for r in (0, 1)]
    assert sizes[1] < sizes[0]
    assert reader.read(tmp_path / "r1.dcz").meta["encode"]["a.weight"]["rd"] == 1
    with pytest.raises(ValueError, match="rd"):
        dc.encode_state_dict(sd, tmp_path / "x.dcz", rd=-0.1)


def test_importance_estimates_the_output_gauss_newton_diagonal(tmp_path):
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    xs = [torch.randn(8, 5) * torch.tensor([0.1, 1.0, 2.0, 0.5, 3.0]) for _ in range(4)]
    h = dc.importance(lin, xs, projections=300)
    # d y_bk / d W_ij = x_bj when k = i: the exact diagonal is the mean over batches of the
    # batch's sum of x_j**2, the same for every row i; the bias's is the batch size
    exact = torch.stack([(x**2).sum(0) for x in xs]).mean(0).expand(3, 5)
    torch.testing.assert_close(h["weight"], exact, rtol=0.2, atol=0)
    torch.testing.assert_close(h["bias"], torch.full((3,), 8.0), rtol=0.2, atol=0)
    assert lin.training  # its mode is restored
    sd = {"weight": lin.weight.detach().clone(), "bias": lin.bias.detach().clone()}
    dc.encode_state_dict(
        sd, tmp_path / "i.dcz", quality=2, rd=1, importance={"weight": h["weight"]}
    )
    with pytest.raises(ValueError, match="does not hold"):
        dc.encode_state_dict(sd, tmp_path / "x.dcz", importance={"weigth": h["weight"]})
    with pytest.raises(ValueError, match="broadcastable"):
        dc.encode_state_dict(sd, tmp_path / "x.dcz", importance={"weight": torch.ones(4)})
    with pytest.raises(ValueError, match="at least one batch"):
        dc.importance(lin, [])


def test_importance_of_a_whole_model_goes_straight_into_encode(tmp_path):
    """What `dc.importance` returns (biases, norms, a pruned layer's parametrization names)
    is taken as it is: the entries of tensors stored raw are ignored, the others count."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    dc.prune_(m, sparsity={"3": 0.5})
    h = dc.importance(m, [torch.randn(4, 8)])
    assert "1.bias" in h and "3.parametrizations.weight.original" in h
    weights_only = {"0.weight": h["0.weight"], "3.weight": h["3.parametrizations.weight.original"]}
    state = {k: v.detach().clone() for k, v in m.state_dict().items()}
    a = dc.encode_state_dict(state, tmp_path / "a.dcz", quality=3, rd=1, importance=h)
    b = dc.encode_state_dict(state, tmp_path / "b.dcz", quality=3, rd=1, importance=None)
    assert a != b  # it counted
    dc.strip_(m)
    plain = {k: v.detach().clone() for k, v in m.state_dict().items()}
    c = dc.encode_state_dict(plain, tmp_path / "c.dcz", quality=3, rd=1, importance=h)
    d = dc.encode_state_dict(plain, tmp_path / "d.dcz", quality=3, rd=1, importance=weights_only)
    assert (tmp_path / "c.dcz").read_bytes() == (tmp_path / "d.dcz").read_bytes()
    assert c == d


def test_importance_moves_bits_to_the_weights_that_matter(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {
        "a.weight": torch.randn(100, 100, generator=g),
        "b.weight": torch.randn(100, 100, generator=g),
    }
    h = {"a.weight": torch.full((100, 100), 100.0), "b.weight": torch.ones(100, 100)}
    dc.encode_state_dict(sd, tmp_path / "h.dcz", quality=3, importance=h)
    out = dc.load(tmp_path / "h.dcz")
    err = {k: relative_error(out, sd, k) for k in sd}
    assert err["a.weight"] * 20 < err["b.weight"]  # 100x the weight: about 100x less error


def test_a_tensor_the_common_quality_destroys_is_named_in_a_warning(tmp_path):
    """One slope for all is optimal for the squared error as a whole, but a head 1000x smaller
    than the rest loses everything at the near-lossless default: say so, naming it."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "emb.weight": torch.randn(1000, 64, generator=g),
        "head.weight": torch.randn(10, 64, generator=g) * 1e-3,
        "mid.weight": torch.randn(64, 64, generator=g) * 0.3,  # an ordinary spread of scales
    }
    with pytest.warns(UserWarning, match=r"leaves head\.weight \(RMS [\d.e-]+, relative error"):
        dc.encode_state_dict(sd, tmp_path / "a.dcz")
    back = dc.load(tmp_path / "a.dcz")
    assert relative_error(back, sd, "head.weight") > 0.5  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dc.encode_state_dict(sd, tmp_path / "b.dcz", quality={"head.weight": 18})
        dc.encode_state_dict({k: sd[k] for k in ("emb.weight", "mid.weight")}, tmp_path / "c.dcz")
    assert relative_error(dc.load(tmp_path / "b.dcz"), sd, "head.weight") < 1e-3
    tiny = {"w": torch.randn(16, 16, generator=g) * 1e-40}  # below any grid: all zeros
    with pytest.warns(UserWarning, match="leaves w "):
        dc.encode_state_dict(tiny, tmp_path / "d.dcz")


def test_the_lost_tensor_warning_counts_only_the_nonzero_weights(tmp_path):
    """A very sparse tensor's zeros stay zeros: its error is that of its few non-zeros, so
    it is not reported as lost (the estimate divided by the RMS over all values)."""
    g = torch.Generator().manual_seed(0)
    sparse = torch.zeros(200, 200)
    sparse.view(-1)[torch.randperm(40000, generator=g)[:8]] = 0.5
    sd = {"a.weight": torch.randn(100, 100, generator=g), "b.weight": sparse}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dc.encode_state_dict(sd, tmp_path / "s.dcz")
    assert relative_error(dc.load(tmp_path / "s.dcz"), sd, "b.weight") < 1e-4


def test_importance_of_a_bare_pruned_layer(tmp_path):
    lin = torch.nn.Linear(6, 4)
    dc.prune_(lin, sparsity=0.5)
    h = dc.importance(lin, [torch.randn(3, 6)])
    assert "parametrizations.weight.original" in h  # no leading dot: the model is the layer
    dc.strip_(lin)
    state = {k: v.detach().clone() for k, v in lin.state_dict().items()}
    dc.encode_state_dict(state, tmp_path / "b.dcz", quality=3, rd=1, importance=h)


def test_weights_near_float32s_largest_value(tmp_path):
    """A coarse grid's top level passed float32's largest value (an infinity: 'the codebook
    is not on the grid'); the step is made a little finer there."""
    g = torch.Generator().manual_seed(0)
    w = (torch.rand(32, 16, generator=g) * 2 - 1) * 3e38
    errors = []
    for q in (-1.5, 0, 4):
        dc.encode_state_dict({"w": w}, tmp_path / "w.dcz", quality=q)
        back = dc.load(tmp_path / "w.dcz")["w"]
        assert torch.isfinite(back).all()
        errors.append(float((back.double() - w.double()).norm() / w.double().norm()))
    assert errors[0] > errors[1] > errors[2]
