"""Builds the optional AVX-512 kernels (src/deepcompress/runtime/_simd.c); everything else is in
pyproject.toml. Without a C compiler the build is skipped and the runtime uses its numba
kernels instead (`deepcompress.simd.available()` says which)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "deepcompress.runtime._simd",
            sources=["src/deepcompress/runtime/_simd.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
