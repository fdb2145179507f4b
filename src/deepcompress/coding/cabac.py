"""Context-adaptive binary arithmetic coding (CABAC-style) of integer symbol streams.

A third entropy coder next to ``huffman`` and ``rans``. It stores **no code table**: every
symbol is turned into binary decisions (*binarization*), each decision is coded with an
adaptive probability (*context*) that starts at 1/2 and learns as the stream goes, and the
decisions drive a binary range coder (LZMA's ``rc``). Contexts selected by the previous
symbols let the coder go below the order-0 entropy when neighbouring symbols are correlated
(pruned inputs cluster, so gaps are; codebook indices of neighbouring weights are).

Everything below is integer arithmetic; encoder and decoder run the same model, so the
output is a deterministic function of ``(symbols, n_symbols)``.

Payload
-------
* An **empty stream** (``count == 0``) is coded as ``b""``; a decoder MUST reject any other
  payload for ``count == 0``. ``n_symbols == 0`` is only valid with an empty stream.
* Otherwise the payload is one ``mode`` byte followed by the range-coder bytes ``rc``
  (at least one byte). ``mode = kind | (rates << 2)``: ``kind = mode & 3`` selects the
  binarization and context set, ``rates = mode >> 2`` (0 or 1) the adaptation speed:

  ====  =================  =================================================================
  kind  binarization       context classes
  ====  =================  =================================================================
  0     tree               one class (an adaptive order-0 model)
  1     tree               the previous symbol's top 3 bits
  2     Exp-Golomb         one class
  3     Exp-Golomb         the previous two symbols' buckets, averaged with an order-0 class
  ====  =================  =================================================================

  ``mode`` MUST be at most 7, and kinds 0 and 1 are only valid when
  ``n_symbols <= TREE_MAX_SYMBOLS`` (4096); a decoder rejects any other ``mode``.
* The symbol count and ``n_symbols`` are not stored (the container stores them).
* **Encoder's choice** (not part of the format; any valid mode decodes): code the stream
  with ``rates = 0`` in every valid kind, keep the shortest (the smallest kind on ties), then
  code that kind with ``rates = 1`` and keep it if strictly shorter. Slow rates only win on
  long stationary streams; real layers are not stationary and prefer fast ones. On a stream
  of ``SAMPLE_FROM`` (2**20) symbols or more the trials run on a sample (16 runs of 2**14
  symbols spread evenly over it) and the whole stream is coded once, in the mode chosen:
  one pass instead of five, at a few bytes in ten thousand (RESULTS.md, issue 20).

Notation: ``bitlen(x)`` is the number of bits of ``x >= 0`` (``bitlen(0) == 0``); ``s`` is the
current symbol; ``prev`` and ``prev2`` are the two symbols before it, taken as 0 where the
stream has none (both are 0 for the first symbol, ``prev2`` is 0 for the second).

Probability model
-----------------
Each context holds two 16-bit estimates ``pa``, ``pb`` of the probability that the next
decision is **0**, in units of ``1/65536`` (both start at ``32768``), and a counter ``k``
(starts at 0). The context's probability is ``p = (pa + pb) >> 1``. After coding a decision
``bit`` in the context, with ``(FAST, SLOW) = RATES[rates]`` = ``(4, 8)`` or ``(6, 9)``::

    w  = bitlen(k + 1) + 1            # 2, 3, 3, 4 (x4), 5 (x8), ...: fast warm-up, ~1/(k+2)
    sa = min(FAST, w);  sb = min(SLOW, w)
    if bit == 0:  pa += (65536 - pa) >> sa;  pb += (65536 - pb) >> sb
    else:         pa -= pa >> sa;            pb -= pb >> sb
    k = min(k + 1, 127)

``pa`` and ``pb`` stay in ``[1, 65535]``, so ``p`` does too. In kind 3 a decision uses two
contexts, ``C`` (its class's) and ``O`` (the order-0 class's context for the same decision),
and is coded with ``p = (C.pa + C.pb + O.pa + O.pb) >> 2``; both are updated with the
decision (each with its own ``k``).

Binarization "tree" (kinds 0, 1)
--------------------------------
With ``nb = bitlen(n_symbols - 1)``, ``s`` is written as ``nb`` bits, most significant first.
A node index starts at ``node = 1``; ``val = 0`` holds the bits so far. For ``j = nb-1 .. 0``:
if ``val + 2**j >= n_symbols`` the bit is 0 and is **not coded** (a 1 would give a value
``>= n_symbols``); otherwise the bit is coded in context ``(class, node)``. Then
``node = 2*node + bit`` and ``val += bit << j``. No decodable bit string can therefore give
a symbol ``>= n_symbols``.

Classes: kind 0 has one class; kind 1 uses ``class = prev >> max(nb - 3, 0)`` (at most 8
classes, each with its own ``2**nb - 1`` node contexts).

Binarization "Exp-Golomb" (kinds 2, 3)
--------------------------------------
``v = s + 1`` (``1 .. n_symbols``), ``B = bitlen(v) - 1`` (the *bucket*),
``Bmax = bitlen(n_symbols) - 1``.

* **Prefix**: ``B`` in truncated unary: for ``j = 0 .. Bmax-1`` code the decision
  ``1 if B > j else 0`` in context ``(class, "prefix", j)`` and stop after the first 0 (no
  terminating 0 when ``B == Bmax``).
* **Suffix**: the ``B`` bits of ``v`` below its leading one, most significant first, with
  ``val = 2**B`` and ``node = 1``. For ``j = B-1 .. 0`` with ``q = B-1-j``: if
  ``val + 2**j > n_symbols`` the bit is 0 and is **not coded**; otherwise the first two
  (``q < 2``) are coded in context ``(class, "suffix", B, node)`` and the rest as *bypass*
  decisions (probability exactly 1/2, below). When ``q < 2``, ``node = 2*node + bit`` (also
  for a bit that was not coded); ``val += bit << j``. So ``v <= n_symbols`` always and
  ``s = v - 1`` is in range.

Classes: kind 2 has one class; kind 3 uses ``class = min(bkt(prev) + bkt(prev2), 6)`` with
``bkt(x) = bitlen(x + 1) - 1`` plus the order-0 class averaged in (above).

Range coder (``rc`` bytes)
--------------------------
LZMA's binary range coder, with its always-zero first byte dropped and a short flush.
The encoder holds ``low`` (33 bits, starts at 0), ``range`` (32 bits, starts at
``0xFFFFFFFF``), a pending byte ``cache`` (starts at 0) and a count ``cache_size`` (starts
at 1).

* A decision ``bit`` with probability ``p`` (of a 0): ``bound = (range >> 16) * p``; bit 0:
  ``range = bound``; bit 1: ``low += bound; range -= bound``.
* A bypass decision: ``range >>= 1``; bit 1: ``low += range``.
* After each decision, while ``range < 2**24``: ``range <<= 8`` and *shift_low*: if
  ``low mod 2**32 < 0xFF000000`` or ``low >= 2**32``, output ``(cache + carry) & 0xFF``
  followed by ``cache_size - 1`` bytes ``(0xFF + carry) & 0xFF``, where
  ``carry = low >> 32``, then set ``cache = (low >> 24) & 0xFF`` and ``cache_size = 0``;
  in both cases ``cache_size += 1`` and ``low = (low mod 2**24) << 8``.
* **Flush**: ``low`` is rounded up to a multiple of ``2**24`` (``low = ceil(low / 2**24) *
  2**24``, still inside the interval as ``range >= 2**24``), then *shift_low* is done five
  times. The output now has ``4 + S`` bytes after the initial one, where ``S`` is the number
  of renormalisation shifts; the first byte output (the initial ``cache``) is always 0 and
  is **dropped**, and so are the **last three**, which are 0 by construction. ``rc`` is the
  remaining ``S + 1`` bytes (never empty; it may end with a 0 byte).

Equivalently, with exact integers: the interval ``[low, low + range)`` starts as
``[0, 2**32 - 1)``, every shift multiplies ``low`` and ``range`` by 256 (no carry handling),
and ``rc`` is the big-endian ``S + 4``-byte representation of the rounded-up final ``low``
without its last three bytes.

The decoder reads ``rc`` followed by **exactly three implicit zero bytes**. It sets
``range = 0xFFFFFFFF`` and reads four bytes big-endian into ``code``; ``code`` MUST be
below ``range`` (``rc`` must not start with four ``0xFF`` bytes). A decision:
``bound = (range >> 16) * p``; if ``code < bound``: bit 0, ``range = bound``; else bit 1,
``code -= bound``, ``range -= bound``. A bypass decision: ``range >>= 1``; bit 0 if
``code < range``, else bit 1 and ``code -= range``. After each decision, while
``range < 2**24``: ``range <<= 8``, ``code = code << 8 | next byte`` (``code`` stays below
``range``, so below ``2**32``).

**Termination check.** Needing a byte beyond the three implicit zeros is an error (the data
is truncated or damaged). After ``count`` symbols, all ``len(rc) + 3`` bytes MUST have been
read (else: bytes left over) and ``code`` MUST be below ``2**24`` (the final value is the
encoder's rounded-up ``low``). An accepted payload is then exactly what the encoder writes
for the decoded symbols (so each stream has one encoding), and most damage is caught; the
container's CRC remains the integrity check.

Hostile input: ``decode`` never reads outside ``data`` (it stops at the first byte needed
beyond the implicit zeros), runs in O(count * bitlen(n_symbols)) time and allocates
O(count + len(data)) memory (at most ``8 * TREE_MAX_SYMBOLS`` contexts). Every decodable
bit string gives symbols below ``n_symbols`` (the binarizations skip impossible bits).
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError
from . import _native
from ._checks import histogram, nonneg_int, symbol_array, symbol_count
from ._lazy_jit import njit

__all__ = [
    "MAX_SYMBOLS",
    "TREE_MAX_SYMBOLS",
    "MODES",
    "encode",
    "decode",
    "encode_mode",
]

#: Largest alphabet (``n_symbols``) the coder accepts.
MAX_SYMBOLS = 65537
#: Largest alphabet for which the tree binarization (modes 0 and 1) is valid.
TREE_MAX_SYMBOLS = 4096
#: The kinds (``mode & 3``) and what they mean; ``mode >> 2`` selects ``RATES``.
MODES = {
    0: "tree, order-0",
    1: "tree, previous-symbol classes",
    2: "Exp-Golomb, order-0",
    3: "Exp-Golomb, previous-buckets classes averaged with order-0",
}

#: The two estimators' shifts: (fast, slow) for rate set 0 (mode bit 2 clear) and 1 (set).
RATES = ((4, 8), (6, 9))
COUNT_MAX = 127

_MODE_SLOW = 4
_FLUSH_IMPLICIT = 3  # zero bytes of the flushed value that are not stored
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF

# Exp-Golomb context layout, per class: prefix j at j (j < 16), suffix (B, node) at
# 16 + 4 * B + node (B <= 16, node 1..3).
_EG_STRIDE = 128
_EG_SUFFIX = 16
_EG_CLASSES = 7  # classes 0..6; the order-0 class of mode 3 is class 7
_EG_ORDER0 = 7
_EG_SUFFIX_CTX_BITS = 2
_TREE_CLASS_BITS = 3
_U1 = np.uint64(1)  # unsigned index offsets (see _decode_eg)
_U2 = np.uint64(2)
# Renormalisation shifts one symbol can cause (at most 32 decisions of at most 17 bits each:
# 3 shifts each), plus the 5 of the flush, rounded up: bytes reserved before each symbol.
_MAX_SHIFTS_PER_SYMBOL = 128


def _shift_tables(fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.array([(k + 1).bit_length() + 1 for k in range(COUNT_MAX + 1)], dtype=np.int64)
    return np.minimum(w, fast), np.minimum(w, slow)


_SHIFTS = tuple(_shift_tables(fast, slow) for fast, slow in RATES)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _bitlen(x):
    n = 0
    while x > 0:
        n += 1
        x >>= 1
    return n


@njit(cache=True, nogil=True)
def _new_contexts(n):
    """``n`` contexts, interleaved as (pa, pb, k) int32 triples: p = 1/2, k = 0.

    The kernels below inline the model and coder steps by hand (helpers taking arrays are
    not inlined cheaply by numba, and this is the hot loop), except ``_decode_eg``, whose
    inner functions are (see there).
    """
    st = np.zeros(3 * n, dtype=np.int32)
    for i in range(n):
        st[3 * i] = 32768
        st[3 * i + 1] = 32768
    return st


# ---- encoder -------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _reserve(out, used):
    """Grow ``out`` so that ``_MAX_SHIFTS_PER_SYMBOL`` more bytes fit after ``used``."""
    if used + _MAX_SHIFTS_PER_SYMBOL <= out.size:
        return out
    bigger = np.empty(2 * out.size + _MAX_SHIFTS_PER_SYMBOL, dtype=np.uint8)
    bigger[: out.size] = out
    return bigger


@njit(cache=True, nogil=True)
def _shift_low(low, cache, csize, out, pos):
    if (low & _MASK32) < 0xFF000000 or (low >> 32) != 0:
        carry = low >> 32
        temp = cache
        while True:
            out[pos] = (temp + carry) & 0xFF
            pos += 1
            temp = 0xFF
            csize -= 1
            if csize == 0:
                break
        cache = (low >> 24) & 0xFF
    csize += 1
    low = (low & 0x00FFFFFF) << 8
    return low, cache, csize, pos


@njit(cache=True, nogil=True)
def _enc_finish(low, rng, cache, csize, out, pos):
    # The smallest multiple of 2**24 that is >= low: inside [low, low + range) as
    # range >= 2**24, and its 3 low bytes are zero, so they need not be stored.
    low = ((low + (1 << 24) - 1) >> 24) << 24
    for _ in range(5):
        low, cache, csize, pos = _shift_low(low, cache, csize, out, pos)
    # out[0] is the initial cache byte, always 0: dropped; so are the 3 zero bytes at the end.
    return out[1 : pos - _FLUSH_IMPLICIT]  # a view: no second buffer as long as the payload


@njit(cache=True, nogil=True)
def _encode_tree(sym, n, use_ctx, sha, shb, cap):
    nb = _bitlen(n - 1)
    cshift = max(nb - _TREE_CLASS_BITS, 0)
    st = _new_contexts((1 << _TREE_CLASS_BITS) << nb if use_ctx else 1 << nb)
    out = np.empty(cap + 2 * _MAX_SHIFTS_PER_SYMBOL, dtype=np.uint8)
    pos = 0
    low = 0
    rng = _MASK32
    cache = 0
    csize = 1
    prev = 0
    for i in range(sym.size):
        out = _reserve(out, pos + csize)
        s = sym[i]
        base = ((prev >> cshift) << nb) if use_ctx else 0
        node = 1
        val = 0
        for j in range(nb - 1, -1, -1):
            if val + (1 << j) >= n:
                node = 2 * node
                continue
            bit = (s >> j) & 1
            ci = 3 * (base + node)
            pa = np.int64(st[ci])
            pb = np.int64(st[ci + 1])
            k = st[ci + 2]
            bound = (rng >> 16) * ((pa + pb) >> 1)
            if bit == 0:
                rng = bound
                st[ci] = pa + ((65536 - pa) >> sha[k])
                st[ci + 1] = pb + ((65536 - pb) >> shb[k])
            else:
                low += bound
                rng -= bound
                st[ci] = pa - (pa >> sha[k])
                st[ci + 1] = pb - (pb >> shb[k])
            if k < COUNT_MAX:
                st[ci + 2] = k + 1
            while rng < _TOP:
                rng <<= 8
                low, cache, csize, pos = _shift_low(low, cache, csize, out, pos)
            node = 2 * node + bit
            val += bit << j
        prev = s
    return _enc_finish(low, rng, cache, csize, out, pos)


@njit(cache=True, nogil=True)
def _encode_eg(sym, n, use_ctx, sha, shb, cap):
    bmax = _bitlen(n) - 1
    st = _new_contexts(_EG_STRIDE * (_EG_ORDER0 + 1) if use_ctx else _EG_STRIDE)
    out = np.empty(cap + 2 * _MAX_SHIFTS_PER_SYMBOL, dtype=np.uint8)
    pos = 0
    low = 0
    rng = _MASK32
    cache = 0
    csize = 1
    bprev = 0
    bprev2 = 0
    for i in range(sym.size):
        out = _reserve(out, pos + csize)
        v = sym[i] + 1
        b = _bitlen(v) - 1
        base = min(bprev + bprev2, _EG_CLASSES - 1) * _EG_STRIDE if use_ctx else 0
        val = 1 << b
        node = 1
        # decision t = 0 .. bmax-1: prefix; then the suffix bits j = b-1 .. 0 (q = b-1-j).
        for t in range(bmax + b):
            if t < bmax:
                if t > b:
                    continue  # after the prefix's terminating 0
                off = t
                bit = 1 if b > t else 0
            else:
                j = bmax + b - 1 - t
                q = b - 1 - j
                if val + (1 << j) > n:
                    if q < _EG_SUFFIX_CTX_BITS:
                        node = 2 * node
                    continue
                bit = (v >> j) & 1
                val += bit << j
                if q >= _EG_SUFFIX_CTX_BITS:
                    rng >>= 1
                    if bit != 0:
                        low += rng
                    while rng < _TOP:
                        rng <<= 8
                        low, cache, csize, pos = _shift_low(low, cache, csize, out, pos)
                    continue
                off = _EG_SUFFIX + 4 * b + node
                node = 2 * node + bit
            ci = 3 * (base + off)
            pa = np.int64(st[ci])
            pb = np.int64(st[ci + 1])
            k = st[ci + 2]
            if use_ctx:
                oi = 3 * (_EG_ORDER0 * _EG_STRIDE + off)
                qa = np.int64(st[oi])
                qb = np.int64(st[oi + 1])
                ko = st[oi + 2]
                p = (pa + pb + qa + qb) >> 2
                if bit == 0:
                    st[oi] = qa + ((65536 - qa) >> sha[ko])
                    st[oi + 1] = qb + ((65536 - qb) >> shb[ko])
                else:
                    st[oi] = qa - (qa >> sha[ko])
                    st[oi + 1] = qb - (qb >> shb[ko])
                if ko < COUNT_MAX:
                    st[oi + 2] = ko + 1
            else:
                p = (pa + pb) >> 1
            bound = (rng >> 16) * p
            if bit == 0:
                rng = bound
                st[ci] = pa + ((65536 - pa) >> sha[k])
                st[ci + 1] = pb + ((65536 - pb) >> shb[k])
            else:
                low += bound
                rng -= bound
                st[ci] = pa - (pa >> sha[k])
                st[ci + 1] = pb - (pb >> shb[k])
            if k < COUNT_MAX:
                st[ci + 2] = k + 1
            while rng < _TOP:
                rng <<= 8
                low, cache, csize, pos = _shift_low(low, cache, csize, out, pos)
        bprev2 = bprev
        bprev = b
    return _enc_finish(low, rng, cache, csize, out, pos)


# ---- decoder -------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _dec_start(data):
    code = 0
    for i in range(4):
        code = (code << 8) | (data[i] if i < data.size else 0)
    return 4, code, _MASK32


@njit(cache=True, nogil=True)
def _dec_check(data, pos, code):
    """0 = ok, 1 = bytes left unread, 3 = final code out of range (2 = read past the end is
    returned by the kernels as soon as it happens)."""
    if pos < data.size + _FLUSH_IMPLICIT:
        return 1
    if code >= 1 << 24:
        return 3
    return 0


@njit(cache=True, nogil=True)
def _decode_tree(data, n, use_ctx, sha, shb, res):
    nb = _bitlen(n - 1)
    cshift = max(nb - _TREE_CLASS_BITS, 0)
    st = _new_contexts((1 << _TREE_CLASS_BITS) << nb if use_ctx else 1 << nb)
    count = res.size
    nd = data.size
    pos, code, rng = _dec_start(data)
    prev = 0
    for i in range(count):
        base = ((prev >> cshift) << nb) if use_ctx else 0
        node = 1
        val = 0
        for j in range(nb - 1, -1, -1):
            if val + (1 << j) >= n:
                node = 2 * node
                continue
            ci = 3 * (base + node)
            pa = np.int64(st[ci])
            pb = np.int64(st[ci + 1])
            k = st[ci + 2]
            bound = (rng >> 16) * ((pa + pb) >> 1)
            if code >= bound:
                bit = 1
                code -= bound
                rng -= bound
                st[ci] = pa - (pa >> sha[k])
                st[ci + 1] = pb - (pb >> shb[k])
            else:
                bit = 0
                rng = bound
                st[ci] = pa + ((65536 - pa) >> sha[k])
                st[ci + 1] = pb + ((65536 - pb) >> shb[k])
            if k < COUNT_MAX:
                st[ci + 2] = k + 1
            while rng < _TOP:
                rng <<= 8
                if pos < nd:
                    code = ((code << 8) | data[pos]) & _MASK32
                elif pos < nd + _FLUSH_IMPLICIT:
                    code = (code << 8) & _MASK32
                else:
                    return res, 2
                pos += 1
            node = 2 * node + bit
            val += bit << j
        res[i] = val
        prev = val
    return res, _dec_check(data, pos, code)


@njit(cache=True, nogil=True)
def _decode_eg(data, n, use_ctx, sha, shb, res):
    bmax = _bitlen(n) - 1
    st = _new_contexts(_EG_STRIDE * (_EG_ORDER0 + 1) if use_ctx else _EG_STRIDE)
    count = res.size
    nd = data.size
    order0 = 3 * _EG_ORDER0 * _EG_STRIDE

    # Inner functions: numba inlines them, and unlike module-level helpers taking the arrays
    # they add no reference counting of the arrays to the loop. Context indices are cast to
    # unsigned (they are never negative), so numba leaves out its negative-index handling.

    def renorm(rng, code, pos):
        """Read bytes into ``code`` while ``range < 2**24``: ``(rng, code, pos, status)``,
        status 2 as soon as a byte beyond the implicit zeros is needed, else 0."""
        while rng < _TOP:
            rng <<= 8
            if pos < nd:
                code = ((code << 8) | data[pos]) & _MASK32
            elif pos < nd + _FLUSH_IMPLICIT:
                code = (code << 8) & _MASK32
            else:
                return rng, code, pos, 2
            pos += 1
        return rng, code, pos, 0

    def decision(ci, oi, rng, code, pos):
        """An adaptive decision in the context at ``st[ci]``, averaged with the one at
        ``st[oi]`` if ``use_ctx``, then renormalised: ``(bit, rng, code, pos, status)``."""
        c = np.uint64(ci)
        o = np.uint64(oi)
        pa = np.int64(st[c])
        pb = np.int64(st[c + _U1])
        k = np.uint32(st[c + _U2])
        sa = sha[k]
        sb = shb[k]
        if use_ctx:
            qa = np.int64(st[o])
            qb = np.int64(st[o + _U1])
            ko = np.uint32(st[o + _U2])
            ta = sha[ko]
            tb = shb[ko]
            p = (pa + pb + qa + qb) >> 2
        else:  # no order-0 context: qa, qb, ko are neither used nor stored
            qa = qb = ta = tb = 0
            ko = k
            p = (pa + pb) >> 1
        bound = (rng >> 16) * p
        if code >= bound:
            bit = 1
            code -= bound
            rng -= bound
            pa -= pa >> sa
            pb -= pb >> sb
            qa -= qa >> ta
            qb -= qb >> tb
        else:
            bit = 0
            rng = bound
            pa += (65536 - pa) >> sa
            pb += (65536 - pb) >> sb
            qa += (65536 - qa) >> ta
            qb += (65536 - qb) >> tb
        st[c] = pa
        st[c + _U1] = pb
        if k < COUNT_MAX:
            st[c + _U2] = k + 1
        if use_ctx:
            st[o] = qa
            st[o + _U1] = qb
            if ko < COUNT_MAX:
                st[o + _U2] = ko + 1
        rng, code, pos, status = renorm(rng, code, pos)
        return bit, rng, code, pos, status

    pos, code, rng = _dec_start(data)
    bprev = 0
    bprev2 = 0
    for i in range(count):
        base = 3 * min(bprev + bprev2, _EG_CLASSES - 1) * _EG_STRIDE if use_ctx else 0
        # prefix: truncated unary bucket
        b = 0
        while b < bmax:
            bit, rng, code, pos, status = decision(base + 3 * b, order0 + 3 * b, rng, code, pos)
            if status != 0:
                return res, status
            if bit == 0:
                break
            b += 1
        # suffix
        val = 1 << b
        node = 1
        for j in range(b - 1, -1, -1):
            q = b - 1 - j
            if val + (1 << j) > n:
                if q < _EG_SUFFIX_CTX_BITS:
                    node = 2 * node
                continue
            if q < _EG_SUFFIX_CTX_BITS:
                off = 3 * (_EG_SUFFIX + 4 * b + node)
                bit, rng, code, pos, status = decision(base + off, order0 + off, rng, code, pos)
                node = 2 * node + bit
            else:  # bypass
                rng >>= 1
                bit = 0
                if code >= rng:
                    code -= rng
                    bit = 1
                rng, code, pos, status = renorm(rng, code, pos)
            if status != 0:
                return res, status
            val += bit << j
        res[i] = val - 1
        bprev2 = bprev
        bprev = b
    return res, _dec_check(data, pos, code)


# --------------------------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------------------------


def _valid_modes(n_symbols: int) -> tuple[int, ...]:
    kinds = (0, 1, 2, 3) if n_symbols <= TREE_MAX_SYMBOLS else (2, 3)
    return kinds + tuple(k | _MODE_SLOW for k in kinds)


def _check_n(n_symbols, exc: type[Exception]) -> int:
    n = nonneg_int(n_symbols, "n_symbols", exc)
    if n > MAX_SYMBOLS:
        raise exc(f"n_symbols must be in 0..{MAX_SYMBOLS}, got {n}")
    return n


def _capacity(hist: np.ndarray) -> int:
    """The encoder's first output buffer for a stream of histogram `hist`: its order-0
    entropy in bytes and a tenth more (an adaptive coder seldom needs more; the kernels grow
    it if it does), so that the buffer is about as long as the payload, which is a view of it."""
    c = hist[hist > 0].astype(np.float64)
    return int(float((c * np.log2(c.sum() / c)).sum()) / 8 * 1.1) + 1024


def _encode_in_mode(sym: np.ndarray, n: int, mode: int, cap: int) -> np.ndarray:
    sha, shb = _SHIFTS[mode >> 2]
    kind = mode & 3
    if kind < 2:
        return _encode_tree(sym, n, kind == 1, sha, shb, cap)
    return _encode_eg(sym, n, kind == 3, sha, shb, cap)


def encode_mode(symbols: np.ndarray, n_symbols: int, mode: int) -> bytes:
    """Code a stream in one given ``mode`` (see the module docstring); for tests and studies.

    Raises:
        ValueError: as ``encode``, or if ``mode`` is not valid for ``n_symbols``.
    """
    n = _check_n(n_symbols, ValueError)
    sym = symbol_array(symbols, n)
    if sym.size == 0:
        return b""
    if mode not in _valid_modes(n):
        raise ValueError(f"mode {mode!r} is not valid for {n} symbols")
    return b"".join((bytes([mode]), _encode_in_mode(sym, n, mode, _capacity(histogram(sym)))))


def encode(symbols: np.ndarray, n_symbols: int, hist: np.ndarray | None = None) -> bytes:
    """Code a stream of symbols in ``[0, n_symbols)`` (layout in the module docstring).

    The mode is chosen by trying the kinds (module docstring, "Encoder's choice"); for a
    stream of ``N`` symbols this costs up to five coding passes over it, or over a sample of
    it and one pass over it when it is long.

    Args:
        symbols: Integer array (flattened in C order).
        n_symbols: Alphabet size, 0..``MAX_SYMBOLS`` (0 only for an empty stream).
        hist: the stream's histogram if the caller has it (it sizes the output buffer).

    Returns:
        The payload; ``b""`` for an empty stream.

    Raises:
        ValueError: if ``n_symbols`` is not an integer in range, ``symbols`` is not an integer
            array, or a symbol is out of range (the message names its position).
    """
    n = _check_n(n_symbols, ValueError)
    sym = symbol_array(symbols, n)
    if sym.size == 0:
        return b""
    whole = histogram(sym) if hist is None else hist
    trial = _sample(sym) if sym.size >= SAMPLE_FROM else sym
    best, cap = None, _capacity(whole if trial is sym else histogram(trial))
    for mode in _valid_modes(n):
        if mode & _MODE_SLOW:
            break
        rc = _encode_in_mode(trial, n, mode, cap)
        if best is None or rc.size < best[1].size:
            best = (mode, rc)
        del rc
    slow = _encode_in_mode(trial, n, best[0] | _MODE_SLOW, cap)
    if slow.size < best[1].size:
        best = (best[0] | _MODE_SLOW, slow)
    del slow
    if trial is not sym:  # the chosen mode, now over the whole stream
        best = (best[0], _encode_in_mode(sym, n, best[0], _capacity(whole)))
    return b"".join((bytes([best[0]]), best[1]))  # one copy of the payload


#: A stream of SAMPLE_FROM symbols or more chooses its mode on SAMPLE_PIECES runs of
#: SAMPLE_RUN symbols spread evenly over it, then is coded once ("Encoder's choice").
SAMPLE_FROM, SAMPLE_PIECES, SAMPLE_RUN = 1 << 20, 16, 1 << 14


def _sample(sym: np.ndarray) -> np.ndarray:
    step = sym.size // SAMPLE_PIECES
    return np.concatenate([sym[i * step : i * step + SAMPLE_RUN] for i in range(SAMPLE_PIECES)])


def decode(data: bytes, n_symbols: int, count: int, *, out=None) -> np.ndarray:
    """Decode ``count`` symbols coded by ``encode`` with the same ``n_symbols``.

    Runs in O(count * bitlen(n_symbols) + len(data)) time and O(count + len(data)) memory
    whatever the input.

    Args:
        data: The payload (bytes-like).
        n_symbols: The alphabet size the stream was coded with.
        count: Number of symbols to decode (the caller bounds it).
        out: None, or where to write the symbols: a C-contiguous uint16, int32 or int64
            array of ``count`` elements wide enough for ``n_symbols`` (``ValueError`` if it is
            not such an array).

    Returns:
        ``np.int64`` array of ``count`` symbols, each in ``[0, n_symbols)``, or ``out``
        holding them.

    Raises:
        FormatError: if ``n_symbols`` or ``count`` is not a valid integer; ``count > 0`` with
            ``n_symbols == 0``; bytes come with an empty stream; the mode byte is missing or
            invalid for ``n_symbols``; no range-coded byte follows it; the range coder's
            start value is out of range; the data runs out (beyond its three implicit zero
            bytes) before ``count`` symbols; or the termination check fails (bytes left
            over, or a final state the encoder cannot produce).
    """
    n = _check_n(n_symbols, FormatError)
    count = symbol_count(count)
    buf = np.frombuffer(data, dtype=np.uint8)
    if count == 0:
        if buf.size:
            raise FormatError(f"{buf.size} trailing bytes of data for an empty stream")
        return _native.symbols_out(out, 0)
    if n == 0:
        raise FormatError(f"{count} symbols expected but the alphabet is empty")
    if buf.size == 0:
        raise FormatError("empty payload: the mode byte is missing")
    mode = int(buf[0])
    if mode not in _valid_modes(n):
        raise FormatError(f"invalid mode byte {mode} for {n} symbols")
    rc = buf[1:]
    if rc.size == 0:
        raise FormatError("range-coded data missing (at least 1 byte after the mode byte)")
    if rc.size >= 4 and rc[0] == rc[1] == rc[2] == rc[3] == 0xFF:
        raise FormatError("range coder start value out of range (0xFFFFFFFF)")
    sha, shb = _SHIFTS[mode >> 2]
    kind = mode & 3
    use_ctx = kind in (1, 3)
    res = _native.symbols_out(out, count)
    if _native.lib() is not None:
        nb = (n - 1).bit_length()
        if kind < 2:
            contexts = (1 << _TREE_CLASS_BITS) << nb if use_ctx else 1 << nb
        else:
            contexts = _EG_STRIDE * (_EG_ORDER0 + 1) if use_ctx else _EG_STRIDE
        kernel = "tree" if kind < 2 else "eg"
        res, status = _native.cabac_decode(kernel, rc, n, use_ctx, contexts, sha, shb, res)
    elif kind < 2:
        res, status = _decode_tree(rc, n, use_ctx, sha, shb, res)
    else:
        res, status = _decode_eg(rc, n, use_ctx, sha, shb, res)
    if status == 1:
        raise FormatError("range-coded data has bytes left over after the last symbol")
    if status == 2:
        raise FormatError("range-coded data ended before the last symbol (truncated?)")
    if status == 3:
        raise FormatError("range coder final state mismatch (damaged data)")
    return res
