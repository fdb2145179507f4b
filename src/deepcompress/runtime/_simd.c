/* The compressed runtime's C kernels: one table of kernels per SIMD level, and the dispatch.
 *
 * Why hand-written C: the operations the fast kernels live on, vector look-ups of the codebook
 * in registers (vpermps/vpermi2ps), compressing the kept x values under a bit mask
 * (vcompressps, or a permute from a look-up table where the ISA has no compress) and gathers,
 * are instructions that no auto-vectoriser emits from plain loops; numba's version of the
 * "index" loop ran 5-6x slower at batch 1 (benchmarks/RESULTS.md, issue 5).
 *
 * Levels (_kernels.h): "portable" (plain C that the compiler vectorises as it can; every
 * build), "avx2" (AVX2 + FMA), "avx512" (F, BW, VL, DQ), "neon" (aarch64, where Advanced SIMD
 * is part of the base ISA). Each x86 level's functions carry their own target attribute, so one
 * build holds them all and `dc_levels` says at run time which this CPU can run; simd.py picks
 * one (or the one DEEPCOMPRESS_SIMD forces) and calls `dc_run` by symbol name from a numba
 * `prange` loop that splits the rows over the cores. The tests check every level the CPU can
 * run against plain numba loops (tests/test_runtime.py) and against a C reference
 * (tools/check_kernels.c, which also runs the aarch64 build under qemu-user).
 *
 * Build with -DDC_STANDALONE for a library without Python (tools/check_kernels.c).
 */
#ifndef DC_STANDALONE
#include <Python.h> /* first, as Python asks */
#endif
#include "_kernels.h"

static int detect_levels(void) {
    int levels = 1 << DC_PORTABLE;
#if DC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("popcnt"))
        levels |= 1 << DC_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("popcnt"))
        levels |= 1 << DC_AVX512;
#elif DC_ARM
    levels |= 1 << DC_NEON;
#endif
    return levels;
}

/* Detected once: dc_run checks every call against it. */
int dc_levels(void) {
#if defined(__GNUC__) || defined(__clang__)
    static int cached = 0; /* 0: not yet detected (a detected set always holds "portable") */
    int levels = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!levels) __atomic_store_n(&cached, levels = detect_levels(), __ATOMIC_RELAXED);
    return levels;
#else
    return detect_levels();
#endif
}

static const dc_kernel *kernels(int64_t level) {
    switch (level) {
    case DC_PORTABLE: return dc_portable_kernels;
#if DC_X86
    case DC_AVX2: return dc_avx2_kernels;
    case DC_AVX512: return dc_avx512_kernels;
#endif
#if DC_ARM
    case DC_NEON: return dc_neon_kernels;
#endif
    default: return 0;
    }
}

int dc_run(int64_t level, int64_t kind, int64_t r0, int64_t r1, const int64_t *ptr,
           const void *pos, int64_t nb, const uint8_t *codes, const float *table, int64_t k,
           const float *x, int64_t nbatch, float *out) {
    const dc_kernel *t = kernels(level);
    if (!t || kind < 0 || kind >= DC_KINDS || !(dc_levels() >> level & 1)) return -1;
    t[kind](r0, r1, ptr, pos, nb, codes, table, k, x, nbatch, out);
    return 0;
}

#ifndef DC_STANDALONE
/* Built as an extension module so that pip builds it; simd.py loads its library and calls
 * `dc_levels` and `dc_run` by name (the module itself is empty). */
static struct PyModuleDef dc_module = {PyModuleDef_HEAD_INIT, "_simd", NULL, -1, NULL,
                                       NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__simd(void) { return PyModule_Create(&dc_module); }
#endif
