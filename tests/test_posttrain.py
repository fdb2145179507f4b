"""Post-training compression of a state dict (`dc.encode_state_dict`, `deepcompress encode`)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import deepcompress as dc
from deepcompress.encode import POSTTRAIN_INIT
from deepcompress.pipeline.models import LeNet5, LeNet300100
from deepcompress.settings import matches, resolve


def state():
    torch.manual_seed(0)
    sd = LeNet5().state_dict()
    sd["step"] = torch.tensor(7)  # a non-float buffer
    sd["half"] = torch.randn(6, 5).half()
    return sd


def reference(w: torch.Tensor, sparsity: float, bits: int) -> torch.Tensor:
    """Slow reference: prune by a stable sort, then snap every kept weight to the nearest
    centroid of a k-means run on the kept weights (centroids taken from the library)."""
    flat = w.reshape(-1).double()
    order = sorted(range(len(flat)), key=lambda i: (abs(float(flat[i])), i))
    kept = sorted(order[round(sparsity * len(flat)) :])
    c, _ = dc.kmeans_1d(flat[kept].float(), 2**bits, init=POSTTRAIN_INIT)
    out = torch.zeros_like(flat)
    for i in kept:
        out[i] = float(c[np.argmin(np.abs(c.astype(np.float64) - float(flat[i])))])
    return out.reshape(w.shape).to(w.dtype)


def test_every_key_survives_and_weights_are_pruned_and_shared(tmp_path):
    sd = state()
    path = tmp_path / "m.dcz"
    size = dc.encode_state_dict(
        sd, path, sparsity={"conv*": 0.5, "ip1.weight": 0.9}, bits={"ip*": 4}, exclude=["conv2"]
    )
    assert size == path.stat().st_size
    out = dc.load(path)
    assert list(out) == list(sd)
    for k in ("conv1.bias", "step", "conv2.weight", "conv2.bias"):  # raw: bit-exact
        assert out[k].dtype == sd[k].dtype and torch.equal(out[k], sd[k])
    torch.testing.assert_close(out["conv1.weight"], reference(sd["conv1.weight"], 0.5, 8))
    torch.testing.assert_close(out["ip1.weight"], reference(sd["ip1.weight"], 0.9, 4))
    torch.testing.assert_close(out["ip2.weight"], reference(sd["ip2.weight"], 0.0, 4))
    assert out["half"].dtype == torch.float16 and len(out["half"].unique()) <= 256
    assert float((out["ip1.weight"] == 0).float().mean()) == pytest.approx(0.9, abs=1e-6)
    # a strict load into a fresh model
    fresh = LeNet5()
    fresh.load_state_dict({k: v for k, v in out.items() if k not in ("step", "half")})


def test_keep_full_precision_values_with_bits_none(tmp_path):
    sd = {"w": torch.randn(50, 40)}
    dc.encode_state_dict(sd, tmp_path / "m.dcz", sparsity=0.7, bits=None)
    out = dc.load(tmp_path / "m.dcz")["w"]
    kept = out != 0
    assert int(kept.sum()) == 600 and torch.equal(out[kept], sd["w"][kept])


@pytest.mark.parametrize("entropy", ["huffman", "rans", "auto"])
def test_entropy_choice_is_honoured_and_auto_is_smallest(tmp_path, entropy):
    sd = state()
    sizes = {}
    for e in ("huffman", "rans", "auto"):
        sizes[e] = dc.encode_state_dict(sd, tmp_path / f"{e}.dcz", sparsity=0.8, entropy=e)
    assert sizes["auto"] <= min(sizes["huffman"], sizes["rans"])
    a, b = dc.load(tmp_path / "huffman.dcz"), dc.load(tmp_path / f"{entropy}.dcz")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_outliers_do_not_collapse_the_default_codebook(tmp_path):
    # PAPER.md: a pretrained weight 175 std out; the default (density) init must hold.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(200, 100, generator=g)
    w[3, 4] = 175.0
    dc.encode_state_dict({"w": w}, tmp_path / "m.dcz", bits=4)
    out = dc.load(tmp_path / "m.dcz")["w"]
    rest = torch.ones_like(w, dtype=torch.bool)
    rest[3, 4] = False
    assert float((out[rest] - w[rest]).pow(2).mean().sqrt()) < 0.2


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        dc.encode_state_dict({"w": torch.tensor([[float("nan")]])}, tmp_path / "a.dcz")
    with pytest.raises(ValueError, match="sparsity"):
        dc.encode_state_dict({"w": torch.ones(2, 2)}, tmp_path / "a.dcz", sparsity=1.5)
    with pytest.raises(ValueError, match="bits"):
        dc.encode_state_dict({"w": torch.ones(2, 2)}, tmp_path / "a.dcz", bits={"w": 17})
    with pytest.raises(ValueError, match="entropy"):
        dc.encode_state_dict({"w": torch.ones(2, 2)}, tmp_path / "a.dcz", entropy="zip")
    with pytest.raises(TypeError, match="not a tensor"):
        dc.encode_state_dict({"w": [1.0]}, tmp_path / "a.dcz")
    assert list(tmp_path.iterdir()) == []


def test_patterns():
    assert matches("classifier.*", "classifier.0.weight")
    assert matches("conv1", "conv1.weight") and not matches("conv1", "conv10.weight")
    assert matches(r"re:features\.\d+", "features.12.weight")
    assert not matches(r"re:features\.\d", "features.12.weight")
    spec = {"ip1.*": 0.9, "ip*": 0.5}
    assert resolve(spec, "ip1.weight", 0) == 0.9 and resolve(spec, "ip2.weight", 0) == 0.5
    assert resolve(spec, "conv1.weight", 0.1) == 0.1 and resolve(0.3, "x", 0) == 0.3


def test_an_exact_name_wins_over_an_earlier_pattern_as_in_prune_():
    spec = {"*": 8, "ip1": 5, "ip2.weight": 4}
    assert resolve(spec, "ip1.weight", 0) == 5 and resolve(spec, "ip2.weight", 0) == 4
    assert resolve(spec, "ip3.weight", 0) == 8
    net = LeNet300100()
    dc.prune_(net, sparsity={"ip*": 0.5, "ip1": 0.9})
    kept = (net.ip1.weight != 0).float().mean().item()
    assert abs(kept - 0.1) < 0.01  # prune_ read "ip1" the same way


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "deepcompress.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_encode_then_decode(tmp_path):
    sd = {k: v for k, v in state().items() if k != "step"}
    src = tmp_path / "m.safetensors"
    save_file(sd, str(src))
    dst = tmp_path / "m.dcz"
    r = cli(
        "encode", str(src), "-o", str(dst), "--sparsity", "0.5",
        "--sparsity-per-layer", "ip1*=0.9", "--bits", "6", "--bits-per-layer", "conv*=8",
        "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["bytes"] == dst.stat().st_size and info["tensors"] == len(sd)
    out = dc.load(dst)
    assert float((out["ip1.weight"] == 0).float().mean()) == pytest.approx(0.9, abs=1e-6)
    assert float((out["ip2.weight"] == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    assert len(out["ip2.weight"].unique()) <= 65 and len(out["conv2.weight"].unique()) > 65
    # refusals: overwriting the input, a file that is not safetensors, a bad PATTERN=VALUE
    before = src.read_bytes()
    for args in (
        (str(src), "-o", str(src)),
        (str(dst), "-o", str(tmp_path / "x.dcz")),
        (str(src), "-o", str(tmp_path / "x.dcz"), "--bits-per-layer", "conv1"),
        (str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.dcz")),
    ):
        r = cli("encode", *args)
        assert r.returncode == 2 and r.stderr.startswith("deepcompress: error:"), r.stderr
    assert src.read_bytes() == before and not (tmp_path / "x.dcz").exists()


def test_cli_encode_with_a_config_file_stores_the_resolved_settings(tmp_path):
    from deepcompress.format.reader import read

    sd = {k: v for k, v in state().items() if k not in ("step", "half")}
    src = tmp_path / "m.safetensors"
    save_file(sd, str(src))
    (tmp_path / "c.yaml").write_text(
        'sparsity: {"ip1.*": 0.9, "conv2": 0.5}\nbits: {"conv*": 6}\nexclude: ["conv1"]\n'
    )
    (tmp_path / "c.json").write_text('{"sparsity": 0.3, "bits": 4, "entropy": "huffman"}')
    for cfg, extra in (("c.yaml", ()), ("c.json", ("--bits", "3"))):
        dst = tmp_path / f"{cfg}.dcz"
        r = cli(
            "encode", str(src), "-o", str(dst), "--config", str(tmp_path / cfg), "--quiet", *extra
        )
        assert r.returncode == 0, r.stderr
        settings = read(dst).meta["encode"]
        out = dc.load(dst)
        if cfg == "c.yaml":
            assert settings["ip1.weight"] == {"sparsity": 0.9, "bits": 8}
            assert settings["conv2.weight"] == {"sparsity": 0.5, "bits": 6}
            assert "conv1.weight" not in settings  # excluded: stored as it is
            assert torch.equal(out["conv1.weight"], sd["conv1.weight"])
        else:  # the flag overrides the file
            assert {s["bits"] for s in settings.values()} == {3}
            assert {s["sparsity"] for s in settings.values()} == {0.3}
            assert len(out["ip1.weight"].unique()) <= 9
    (tmp_path / "bad.json").write_text('{"sparsty": 0.3}')
    r = cli(
        "encode", str(src), "-o", str(tmp_path / "x.dcz"), "--config", str(tmp_path / "bad.json")
    )
    assert r.returncode == 2 and "unknown settings" in r.stderr


def test_cli_config_catch_all_survives_the_flags(tmp_path):
    """Issue 15: `{"ip1.*": 0.9, "*": 0.5}` from --config lost its "*" (became 0.0) when the
    flags were merged in; a per-layer flag still wins over the file, the scalar flag over "*"."""
    from deepcompress.format.reader import read

    sd = {k: v for k, v in state().items() if k not in ("step", "half")}
    src = tmp_path / "m.safetensors"
    save_file(sd, str(src))
    (tmp_path / "c.json").write_text('{"sparsity": {"ip1.*": 0.9, "*": 0.5}, "bits": 5}')
    runs = {
        "file": (),
        "per-layer flag": ("--sparsity-per-layer", "conv1=0.2"),
        "scalar flag": ("--sparsity", "0.25"),
    }
    for label, extra in runs.items():
        dst = tmp_path / f"{label}.dcz"
        r = cli("encode", str(src), "-o", str(dst), "--config", str(tmp_path / "c.json"),
                "--quiet", *extra)  # fmt: skip
        assert r.returncode == 0, r.stderr
        got = {n: s["sparsity"] for n, s in read(dst).meta["encode"].items()}
        rest = 0.25 if label == "scalar flag" else 0.5
        assert got["ip1.weight"] == 0.9, label
        assert got["conv2.weight"] == got["ip2.weight"] == rest, label
        assert got["conv1.weight"] == (0.2 if label == "per-layer flag" else rest), label


def test_settings_are_strict_in_encode_state_dict(tmp_path):
    """Issue 15: a key or exclude pattern that reaches no weight, or a kind key (a state dict
    has no layer kinds), is an error naming it, as in prune_/quantize_; nothing is written."""
    sd = state()
    path = tmp_path / "m.dcz"
    for kwargs, words in (
        ({"sparsity": {"classifer.*": 0.9}}, "classifer.*"),
        ({"bits": {"ip1.bias": 4}}, "ip1.bias"),
        ({"bits": {"conv": 6}}, "need a model"),
        ({"exclude": ["nothing*"]}, "nothing*"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)):
            dc.encode_state_dict(sd, path, **kwargs)
        assert not path.exists()
    # an exclude pattern may name tensors that are stored as they are anyway (norms, biases)
    dc.encode_state_dict(sd, path, exclude=["*.bias"])
    src = tmp_path / "m.safetensors"
    save_file({k: v for k, v in sd.items() if k != "step"}, str(src))
    r = cli("encode", str(src), "-o", str(tmp_path / "x.dcz"), "--bits-per-layer", "classifer.*=4")
    assert r.returncode == 2 and "classifer.*" in r.stderr, r.stderr
    assert not (tmp_path / "x.dcz").exists()


def test_heavy_tailed_weights_are_shared_no_worse_than_a_uniform_grid(tmp_path):
    """Issue 20's defect: a tensor of small weights with a few far outliers (as Resemblyzer's
    LSTM input weights, up to |61| at std 1.4). The default post-training encode must reach at
    least the squared error of a uniform grid of as many levels over [min, max], and keep the
    outliers (they lost 20+ to the quantile-initialised codebook)."""
    import numpy as np

    import deepcompress as dc

    rng = np.random.default_rng(0)
    w = rng.standard_t(2.5, size=(1024, 40)).astype(np.float32)
    w[3, 7], w[500, 1], w[900, 30] = -61.02, 48.5, 37.25
    t = torch.from_numpy(w)
    dc.encode_state_dict({"w": t}, tmp_path / "w.dcz")
    got = dc.load(tmp_path / "w.dcz")["w"].numpy()
    grid = np.linspace(w.min(), w.max(), 256)
    uniform = grid[np.abs(w[..., None] - grid).argmin(-1)]
    assert ((got - w) ** 2).mean() <= ((uniform - w) ** 2).mean() * (1 + 1e-6)
    assert np.abs(got - w).max() <= np.abs(uniform - w).max() + 1e-6
    assert abs(float(got[3, 7]) + 61.02) < 0.3


def test_every_bits_value_encodes_or_is_refused_clearly(tmp_path):
    """Issue 20's defect: `--bits 16` failed inside the Huffman coder ("65517 symbols present,
    more than 2**15 codes"). With entropy "auto" a stream goes to a coder that can take its
    alphabet (CABAC up to 65,537 symbols); a forced coder that cannot says which can."""
    t = torch.randn(200, 200)  # 40,000 distinct values: a 16-bit codebook keeps each
    for bits in range(1, 17):
        path = tmp_path / f"b{bits}.dcz"
        dc.encode_state_dict({"w": t}, path, bits=bits)
        got = dc.load(path)["w"]
        assert len(got.unique()) <= 2**bits
        if bits == 16:
            assert torch.equal(got, t)  # every value is its own level
    with pytest.raises(ValueError, match="entropy='huffman' cannot code this stream.*cabac"):
        dc.encode_state_dict({"w": t}, tmp_path / "h.dcz", bits=16, entropy="huffman")
    assert not (tmp_path / "h.dcz").exists()
    with pytest.raises(ValueError, match="bits"):
        dc.encode_state_dict({"w": t}, tmp_path / "x.dcz", bits=17)


def test_streams_code_alike_in_every_integer_width():
    """The encoder keeps its long arrays as uint16/int32 (no int64 copy); every coder must
    write the same bytes for them as for the int64 stream."""
    from deepcompress.coding.coders import CODERS, encode_stream

    rng = np.random.default_rng(3)
    small = np.minimum(rng.geometric(0.3, size=5000) - 1, 40)
    large = np.rint(np.abs(rng.normal(0, 1500, size=20000))).astype(np.int64) % 65535 + 1
    large[::7] = 0  # a 16-bit codebook's indices and fillers: CABAC's other modes
    for stream in (small, large):
        for entropy in ("auto", *CODERS):
            ref = encode_stream(stream.astype(np.int64), entropy)
            for dtype in (np.uint16, np.int32):
                assert encode_stream(stream.astype(dtype), entropy) == ref


def test_quality_encode_memory_stays_near_the_tensor_size():
    """Rate-distortion encoding of a dense tensor (fillers present) holds no array much
    larger than the tensor: numpy's allocations, as tracemalloc counts them, peak below 2.75x
    the float32 tensor (the gap and symbol streams as uint16, 1x; the coders' buffers and
    payloads at about 10 bits a weight; it was 12x with int64 positions and symbols, 3.8x
    while the raw gaps and kept symbols stayed alive beside the streams and every coder's
    payload was held until the choice)."""
    import tracemalloc

    from deepcompress.ecsq import lam_for_quality, quantize
    from deepcompress.encode import encode_tensor

    torch.manual_seed(0)
    t = torch.randn(1024, 1024)
    t[0, :5000] = 0  # a run of zeros: fillers at gap width 2
    lam = lam_for_quality(8, 1.0)
    encode_tensor("w", t, lam=lam, index_bits=2)  # warm: kernels loaded
    tracemalloc.start()
    try:
        record = encode_tensor("w", t, lam=lam, index_bits=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    kept = int(np.count_nonzero(quantize(t, lam, rd=0).symbols))
    assert record.codec == "shared" and record.params["entries"] > kept  # fillers
    assert peak < 2.75 * t.numel() * 4, peak / (t.numel() * 4)


def test_settings_given_as_numpy_or_tensor_numbers_and_bad_numbers(tmp_path):
    sd = {"a.weight": torch.randn(8, 8)}
    dc.encode_state_dict(sd, tmp_path / "n.dcz", sparsity=torch.tensor(0.5), bits=np.int64(4))
    dc.encode_state_dict(sd, tmp_path / "q.dcz", quality=np.float32(3))
    for kw in (dict(bits=float("inf")), dict(bits="four"), dict(sparsity=float("nan"))):
        with pytest.raises(ValueError, match="must be"):
            dc.encode_state_dict(sd, tmp_path / "x.dcz", **kw)


def test_infinity_in_a_tensor_stored_as_is_and_quality_none(tmp_path):
    """An attention mask of -inf is a buffer stored as it is: it comes back (it was refused as
    'NaN or infinity'); a weight to compress with an infinity, and NaN anywhere, are refused.
    quality=None stores every tensor as it is, as documented."""
    mask = torch.triu(torch.full((4, 4), float("-inf")), 1)
    sd = {"fc.weight": torch.randn(8, 8), "mask": mask}
    with pytest.raises(ValueError, match="'mask' contains NaN or infinity.*exclude it"):
        dc.encode_state_dict(sd, tmp_path / "m.dcz")  # a 2-D float tensor: a weight to quantize
    dc.encode_state_dict(sd, tmp_path / "m.dcz", exclude=["mask"])
    assert torch.equal(dc.load(tmp_path / "m.dcz")["mask"], mask)
    net = nn.Sequential(nn.Linear(4, 4))
    net.register_buffer("mask", mask)
    dc.save(net, tmp_path / "s.dcz", raw_dtype=torch.float16)
    assert torch.equal(dc.load(tmp_path / "s.dcz")["mask"], mask.half())
    dc.encode_state_dict(sd, tmp_path / "n.dcz", quality=None)
    assert all(torch.equal(v, sd[k]) for k, v in dc.load(tmp_path / "n.dcz").items())
    for bad in ({"w": torch.tensor([[1.0, float("inf")]])}, {"b": torch.tensor([float("nan")])}):
        with pytest.raises(ValueError, match="NaN or infinity"):
            dc.encode_state_dict(bad, tmp_path / "x.dcz")
