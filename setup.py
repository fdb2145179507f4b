"""Builds the two optional C extensions: the compressed runtime's kernels
(src/deepcompress/runtime/_simd.c and its kernels_*.c: portable C, AVX2, AVX-512 and NEON in one
library, chosen at run time) and the entropy decoders (src/deepcompress/coding/_decoders.c);
everything else is in pyproject.toml. Without a C compiler the build is skipped and both use
their numba kernels instead (`deepcompress.runtime.simd.level()` says which runs)."""

from setuptools import Extension, setup

RUNTIME = "src/deepcompress/runtime/"

setup(
    ext_modules=[
        Extension(
            "deepcompress.runtime._simd",
            sources=[
                RUNTIME + name
                for name in (
                    "_simd.c",
                    "kernels_portable.c",
                    "kernels_avx2.c",
                    "kernels_avx512.c",
                    "kernels_neon.c",
                )
            ],
            depends=[RUNTIME + "_kernels.h", RUNTIME + "_batched.h"],
            include_dirs=[RUNTIME],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "deepcompress.coding._decoders",
            sources=["src/deepcompress/coding/_decoders.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
