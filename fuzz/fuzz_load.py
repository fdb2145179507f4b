"""Coverage-guided fuzzing of the .dcz reader with atheris.

Run:  pip install atheris && python fuzz/fuzz_load.py -atheris_runs=100000

Each input either is a whole file, or steers a mutation of a valid sample file (raw bytes,
header fields with the checksums recomputed, section bytes with the checksums recomputed).
Every input must decode or raise `deepcompress.FormatError`: any other exception, a crash, a
hang (libFuzzer's -timeout) or a large allocation (-rss_limit_mb, and the reader's
max_elements) is a finding. At the end it prints how many inputs ran and how many decoded.
"""

import atexit
import sys

import atheris
import numba  # noqa: F401  (imported before instrumentation: numba cannot compile
import numpy  # noqa: F401   instrumented code, and coverage of these is not our target)
import torch  # noqa: F401

# The entropy coders' kernels are numba-compiled: instrumented bytecode cannot compile.
with atheris.instrument_imports(
    include=["deepcompress"],
    exclude=[f"deepcompress.coding.{c}" for c in ("huffman", "rans", "cabac")],
):
    import deepcompress as dc
    from deepcompress.coding.coders import CODERS
    from deepcompress.testing import (
        FIELDS,
        NASTY_VALUES,
        OPS,
        mutate_bytes,
        mutate_field,
        mutate_section,
        sample_file,
    )

SAMPLES = [sample_file(c) for c in CODERS]  # one per entropy coder
LIMIT = 10**6
counts = {"inputs": 0, "decoded": 0, "format_errors": 0}


def one_input(data: bytes) -> None:
    counts["inputs"] += 1
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        buf = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        buf = fdp.PickValueInList(SAMPLES)
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            if mode == 1:
                buf = mutate_bytes(
                    buf,
                    fdp.PickValueInList(list(OPS)),
                    fdp.ConsumeIntInRange(0, 2**20),
                    fdp.ConsumeIntInRange(0, 255),
                )
            elif mode == 2:
                value = (
                    fdp.PickValueInList(list(NASTY_VALUES))
                    if fdp.ConsumeBool()
                    else fdp.ConsumeIntInRange(-(2**40), 2**40)
                )
                buf = mutate_field(
                    buf, fdp.ConsumeIntInRange(0, 20), fdp.PickValueInList(list(FIELDS)), value
                )
            else:
                buf = mutate_section(
                    buf, fdp.ConsumeIntInRange(0, 2**20), fdp.ConsumeIntInRange(0, 255)
                )
    try:
        state = dc.load_bytes(buf, max_elements=LIMIT)
    except dc.FormatError:
        counts["format_errors"] += 1
        return
    counts["decoded"] += 1
    assert sum(t.numel() for t in state.values()) <= LIMIT


def report() -> None:
    print(
        f"fuzz_load: {counts['inputs']} inputs, {counts['decoded']} decoded, "
        f"{counts['format_errors']} FormatError, no other outcome",
        file=sys.stderr,
    )


if __name__ == "__main__":
    atexit.register(report)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
