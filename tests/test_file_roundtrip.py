"""The whole file: every codec, dtype and corner shape round-trips bit-exactly; damage is caught."""

import os

import numpy as np
import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.coding import codec, coders
from deepcompress.format.container import Record, from_bytes, to_bytes


def roundtrip(records):
    back, _ = from_bytes(to_bytes(records))
    out = {}
    for r in back:
        _, decoder = codec.DECODERS[r.codec]
        out[r.name] = decoder(r.params, r.parts, codec.DTYPES[r.dtype], r.shape)
    return out


def shared_record(name, idx, codebook, index_bits=None, entropy="auto"):
    params, parts = codec.encode_shared(idx, codebook, index_bits, entropy)
    return Record(name, tuple(idx.shape), "float32", "shared", params, parts)


def dense_from(idx, codebook):
    return torch.cat([torch.zeros(1), codebook])[idx]


@pytest.mark.parametrize("dtype", list(codec.DTYPES.values()))
@pytest.mark.parametrize("shape", [(0,), (1,), (3, 0, 2), (), (7, 5), (2, 3, 4, 5)])
def test_raw_round_trip_every_dtype_and_shape(dtype, shape):
    t = (torch.randn(shape) * 100).to(dtype)
    rec = Record("t", tuple(t.shape), codec.dtype_name(dtype), "raw", *codec.encode_raw(t))
    out = roundtrip([rec])["t"]
    assert out.dtype == dtype and out.shape == t.shape
    assert torch.equal(out, t)


@pytest.mark.parametrize("bits", [1, 2, 5, 8])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.08, 0.5, 1.0])
@pytest.mark.parametrize("index_bits", [None, 1, 3, 8])
@pytest.mark.parametrize("entropy", coders.ENTROPY_CHOICES)
def test_shared_round_trip(bits, density, index_bits, entropy):
    g = torch.Generator().manual_seed(bits * 100 + int(density * 1000))
    shape = (40, 3, 5, 5)  # a conv weight
    k = 2**bits
    idx = torch.randint(1, k + 1, shape, generator=g)
    idx[torch.rand(shape, generator=g) >= density] = 0
    codebook = torch.randn(k, generator=g)
    rec = shared_record("w", idx, codebook, index_bits, entropy)
    if entropy in coders.CODERS:
        assert rec.params.get("weight_coder", "huffman") == entropy
        assert rec.params.get("gap_coder", "huffman") == entropy
    out = roundtrip([rec])["w"]
    assert torch.equal(out, dense_from(idx, codebook))


def test_shared_one_element_and_long_gaps():
    for idx in (torch.tensor([1]), torch.tensor([0]), torch.zeros(100000, dtype=torch.int64)):
        assert torch.equal(
            roundtrip([shared_record("w", idx, torch.tensor([0.25]))])["w"],
            dense_from(idx, torch.tensor([0.25])),
        )
    idx = torch.zeros(100000, dtype=torch.int64)
    idx[[0, 99999]] = 1
    rec = shared_record("w", idx, torch.tensor([-3.0]), index_bits=2)
    assert rec.params["entries"] == 2 + 99998 // 4  # the fillers are really there
    assert torch.equal(roundtrip([rec])["w"], dense_from(idx, torch.tensor([-3.0])))


@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("entropy", coders.ENTROPY_CHOICES)
def test_sparse_round_trip(density, dtype, entropy):
    t = torch.randn(30, 70).to(dtype)
    t[torch.rand(30, 70) >= density] = 0
    params, parts = codec.encode_sparse(t, entropy=entropy)
    rec = Record("w", tuple(t.shape), codec.dtype_name(dtype), "sparse", params, parts)
    assert torch.equal(roundtrip([rec])["w"], t)


def architecture():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
        nn.Linear(10, 3),
    )


def small_model():
    torch.manual_seed(0)
    net = architecture()
    dc.prune_(net, sparsity={"0": 0.3, "3": 0.8, "5": 0.5})
    dc.quantize_(net, bits={"0": 8, "3": 5})  # layer 5 stays pruned-only, layer 6 untouched
    return net


def test_model_save_load_is_bit_exact(tmp_path):
    net = small_model()
    path = tmp_path / "m.dcz"
    size = dc.save(net, path)
    assert size == os.path.getsize(path)
    state = dc.load(path)
    plain = {k: v for k, v in dc.strip_(small_model()).state_dict().items()}
    assert set(state) == set(plain)  # every key of state_dict(), BatchNorm buffers included
    for k, v in plain.items():
        assert torch.equal(state[k], v), k
    fresh = architecture()
    dc.load(path, model=fresh)
    x = torch.randn(2, 1, 8, 8)
    net.eval(), fresh.eval()
    assert torch.equal(fresh(x), net(x))


def test_same_model_gives_identical_bytes(tmp_path):
    dc.save(small_model(), tmp_path / "a.dcz")
    dc.save(small_model(), tmp_path / "b.dcz")
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()


def test_load_into_the_wrong_model_says_so(tmp_path):
    dc.save(small_model(), tmp_path / "m.dcz")
    with pytest.raises(ValueError, match="does not"):
        dc.load(tmp_path / "m.dcz", model=nn.Sequential(nn.Linear(3, 3)))


def test_every_single_bit_flip_is_detected(tmp_path):
    net = nn.Sequential(nn.Linear(12, 6), nn.Linear(6, 2))
    dc.prune_(net, sparsity=0.6)
    dc.quantize_(net, bits=2)
    data = bytearray(
        to_bytes([shared_record("w", torch.tensor([[0, 1, 2]]), torch.tensor([1.0, 2.0]))])
    )
    path = tmp_path / "m.dcz"
    dc.save(net, path)
    for buf in (data, bytearray(path.read_bytes())):
        for i in range(len(buf) * 8):
            bad = bytearray(buf)
            bad[i // 8] ^= 1 << (i % 8)
            with pytest.raises(dc.FormatError):
                from_bytes(bytes(bad))


def test_truncation_and_trailing_bytes_are_detected(tmp_path):
    path = tmp_path / "m.dcz"
    dc.save(small_model(), path)
    buf = path.read_bytes()
    for n in range(0, len(buf), 7):
        with pytest.raises(dc.FormatError):
            from_bytes(buf[:n])
    with pytest.raises(dc.FormatError, match="unexpected bytes"):
        from_bytes(buf + b"\0")


def test_not_our_file_and_missing_file(tmp_path):
    import pickle

    p = tmp_path / "evil.dcz"
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(dc.FormatError, match="not a deepcompress file"):
        dc.load(p)
    with pytest.raises(FileNotFoundError):
        dc.load(tmp_path / "nope.dcz")


def test_save_refuses_nan_and_leaves_no_partial_file(tmp_path):
    net = nn.Sequential(nn.Linear(3, 3))
    with torch.no_grad():
        net[0].bias[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dc.save(net, tmp_path / "m.dcz")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        dc.save(nn.Linear(2, 2), tmp_path / "no" / "m.dcz")


def test_code_length_tables_pack_and_unpack():
    lens = np.array([3, 0, 15, 1, 7], dtype=np.uint8)
    assert np.array_equal(coders.unpack_lengths(coders.pack_lengths(lens), 5), lens)
    with pytest.raises(dc.FormatError):
        coders.unpack_lengths(bytes([0x12, 0x34, 0x56]), 5)  # padding nibble not zero


def test_recode_shared_keeps_the_tensor_and_switches_the_coder():
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(1, 17, (30, 40), generator=g)
    idx[torch.rand(30, 40, generator=g) > 0.2] = 0
    codebook = torch.randn(16, generator=g)
    params, parts = codec.encode_shared(idx, codebook, 3, entropy="huffman")
    for entropy in ("rans", "cabac"):
        p2, parts2 = codec.recode_shared(params, parts, idx.numel(), entropy)
        assert p2["weight_coder"] == entropy and p2["gap_coder"] == entropy
        assert p2["index_bits"] == 3 and p2["entries"] == params["entries"]
        out = codec.decode_shared(p2, parts2, torch.float32, (30, 40))
        assert torch.equal(out, dense_from(idx, codebook))


def test_a_non_finite_codebook_is_refused_by_both_decoders(tmp_path):
    """A damaged codebook with a NaN (checksums recomputed): the dense decoder and the
    compressed runtime both raise FormatError (the runtime used to raise a plain ValueError,
    the dense decoder to return NaN weights)."""
    from deepcompress.pipeline.models import LeNet300100
    from deepcompress.testing import mutate_section, split

    torch.manual_seed(0)
    net = LeNet300100()
    dc.prune_(net, sparsity=0.9)
    dc.quantize_(net, bits=5)
    path = tmp_path / "m.dcz"
    dc.save(net, path)
    good = path.read_bytes()
    header, _ = split(good)
    off = header["tensors"][0]["offset"]
    bad = good
    for pos in (off, off + 1, off + 2, off + 3):  # the first codebook value: 0xFFFFFFFF, a NaN
        bad = mutate_section(bad, pos, 0xFF ^ split(bad)[1][pos])
    with pytest.raises(dc.FormatError, match="codebook holds NaN"):
        dc.load_bytes(bad)
    path.write_bytes(bad)
    with pytest.raises(dc.FormatError, match="codebook holds NaN"):
        dc.load(path, model=LeNet300100(), runtime="compressed")


def test_tensors_decoded_on_threads_are_those_decoded_one_by_one():
    """`File.decode` decodes big tensors side by side: the same tensors, in the file's order,
    as one after the other; a damaged tensor still fails with its name, whichever thread."""
    from deepcompress.errors import FormatError
    from deepcompress.format.reader import PARALLEL_MIN, File

    g = torch.Generator().manual_seed(0)
    records = []
    for i, entropy in enumerate(["cabac", "rans", "huffman", "cabac"]):
        n = PARALLEL_MIN + 1000 * i
        idx = torch.randint(0, 17, (n,), generator=g) * (torch.rand(n, generator=g) < 0.6)
        records.append(shared_record(f"w{i}", idx, torch.randn(16, generator=g), None, entropy))
    records.insert(2, shared_record("small", torch.tensor([1, 0, 2]), torch.randn(2), None))
    file = File(records, {}, {})
    one = file.decode(threads=1)
    for threads in (2, 4, None):
        many = file.decode(threads=threads)
        assert list(many) == list(one) == ["w0", "w1", "small", "w2", "w3"]
        assert all(torch.equal(many[k], one[k]) for k in one)
    damaged = list(records)
    parts = list(records[3].parts)
    parts[2] = parts[2][: len(parts[2]) // 2]  # the cluster stream cut in half
    damaged[3] = Record("w2", records[3].shape, "float32", "shared", records[3].params, parts)
    with pytest.raises(FormatError, match="'w2'"):
        File(damaged, {}, {}).decode(threads=2)
