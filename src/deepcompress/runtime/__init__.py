"""The last stage: run Linear and Conv2d layers straight from their compressed form.

`modules` holds the compressed layers, `autotune_` and `bench_file`; `layouts` the in-memory
layouts of a compressed weight and their numba kernels; `simd` the C kernels of `_simd.c` at
the SIMD level this CPU runs (AVX-512, AVX2, NEON or portable C).
"""

from .modules import (
    CompressedConv2d,
    CompressedLinear,
    autotune_,
    bench_file,
    compressed_layer,
    matrix_from_record,
    median_seconds,
    supports,
)

__all__ = [
    "CompressedConv2d",
    "CompressedLinear",
    "autotune_",
    "bench_file",
    "compressed_layer",
    "matrix_from_record",
    "median_seconds",
    "supports",
]
