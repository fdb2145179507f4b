"""Builds the optional C kernels of the compressed runtime (src/deepcompress/runtime/_simd.c and
its kernels_*.c: portable C, AVX2, AVX-512 and NEON in one library, chosen at run time);
everything else is in pyproject.toml. Without a C compiler the build is skipped and the runtime
uses its numba kernels instead (`deepcompress.runtime.simd.level()` says which)."""

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
        )
    ]
)
