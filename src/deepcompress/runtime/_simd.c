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
 * one (or the one DEEPCOMPRESS_SIMD forces) and calls `dc_run_pool` by symbol name from a
 * numba function compiled with nogil, which splits the rows over threads of its own (below).
 * The tests check every level the CPU can run against plain numba loops (tests/test_runtime.py)
 * and against a C reference (tools/check_kernels.c, which also runs the aarch64 build under
 * qemu-user).
 *
 * Build with -DDC_STANDALONE for a library without Python (tools/check_kernels.c).
 */
#ifndef DC_STANDALONE
#include <Python.h> /* first, as Python asks */
#endif
#include "_kernels.h"
#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define DC_POOL 1
#include <pthread.h>
#include <sched.h>
#include <time.h>
#endif

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

/* The threads: a pool of our own, not OpenMP (whose libgomp torch shares, and which kills a
 * fork()ed child that runs a kernel after its parent did). `dc_run_pool` splits rows 0..rows
 * into `threads` blocks of about the same number of kept weights; the caller runs the first and
 * the pool's workers the others, while the caller spins until they are done. A worker spins for
 * DC_SPIN_NS after a block (the next layer's product is usually that close) and then sleeps on
 * a condition variable. One product at a time: a call that finds the pool busy (another
 * thread's product) runs its rows alone. A fork()ed child starts with no workers. */
#if DC_POOL
#define DC_MAX_THREADS 256
#define DC_SPIN_NS 100000

typedef struct {
    int64_t level, kind, nb, k, nbatch, n; /* n: blocks */
    const int64_t *ptr;
    const void *pos;
    const uint8_t *codes;
    const float *table, *x;
    float *out;
    int64_t bounds[DC_MAX_THREADS + 1];
} dc_job;

static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER; /* held while a product runs */
static pthread_mutex_t pool_m = PTHREAD_MUTEX_INITIALIZER;    /* guards sleeping workers */
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int64_t pool_started;                 /* workers running (1..pool_started) */
static uint64_t pool_gen;                    /* bumped for each product (atomic) */
static int64_t pool_pending;                 /* workers not done with this product (atomic) */
static uint64_t pool_seen0[DC_MAX_THREADS]; /* pool_gen when each worker was started */
static dc_job pool_job;

static void pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t pool_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void pool_block(const dc_job *j, int64_t i) {
    if (j->bounds[i] < j->bounds[i + 1])
        kernels(j->level)[j->kind](j->bounds[i], j->bounds[i + 1], j->ptr, j->pos, j->nb, j->codes,
                                   j->table, j->k, j->x, j->nbatch, j->out);
}

static void *pool_worker(void *arg) {
    int64_t id = (int64_t)(intptr_t)arg;
    uint64_t seen = pool_seen0[id - 1], g;
    for (;;) {
        uint64_t t0 = pool_now();
        for (int spins = 1; (g = __atomic_load_n(&pool_gen, __ATOMIC_ACQUIRE)) == seen; spins++) {
            pool_relax();
            if (spins % 256 == 0 && pool_now() - t0 > DC_SPIN_NS) {
                pthread_mutex_lock(&pool_m);
                while ((g = __atomic_load_n(&pool_gen, __ATOMIC_ACQUIRE)) == seen)
                    pthread_cond_wait(&pool_wake, &pool_m);
                pthread_mutex_unlock(&pool_m);
                break;
            }
        }
        seen = g;
        if (id < pool_job.n) pool_block(&pool_job, id);
        __atomic_sub_fetch(&pool_pending, 1, __ATOMIC_RELEASE);
    }
    return 0;
}

static void pool_after_fork(void) { /* in the child: the parent's workers do not exist here */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_busy = m, pool_m = m, pool_wake = c;
    pool_started = 0, pool_pending = 0;
}

static void pool_init(void) { pthread_atfork(0, 0, pool_after_fork); }

/* The first row whose entries start at or after `target` (ptr ascending). */
static int64_t pool_cut(const int64_t *ptr, int64_t rows, int64_t target) {
    int64_t lo = 0, hi = rows;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ptr[mid] < target) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}
#endif

/* dc_run over rows 0..rows on up to `threads` threads (1: the calling thread alone). */
int dc_run_pool(int64_t threads, int64_t level, int64_t kind, int64_t rows, const int64_t *ptr,
                const void *pos, int64_t nb, const uint8_t *codes, const float *table, int64_t k,
                const float *x, int64_t nbatch, float *out) {
    const dc_kernel *t = kernels(level);
    if (!t || kind < 0 || kind >= DC_KINDS || !(dc_levels() >> level & 1)) return -1;
#if DC_POOL
    int64_t n = threads < rows ? threads : rows;
    if (n > DC_MAX_THREADS) n = DC_MAX_THREADS;
    pthread_once(&pool_once, pool_init);
    if (n > 1 && pthread_mutex_trylock(&pool_busy) == 0) {
        while (pool_started < n - 1) { /* start the missing workers; fewer blocks if one fails */
            pthread_t th;
            pthread_attr_t attr;
            pool_seen0[pool_started] = __atomic_load_n(&pool_gen, __ATOMIC_RELAXED);
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            int bad = pthread_create(&th, &attr, pool_worker, (void *)(intptr_t)(pool_started + 1));
            pthread_attr_destroy(&attr);
            if (bad) break;
            pool_started++;
        }
        if (n > pool_started + 1) n = pool_started + 1;
        dc_job *j = &pool_job;
        j->level = level, j->kind = kind, j->nb = nb, j->k = k, j->nbatch = nbatch, j->n = n;
        j->ptr = ptr, j->pos = pos, j->codes = codes, j->table = table, j->x = x, j->out = out;
        j->bounds[0] = 0, j->bounds[n] = rows;
        for (int64_t i = 1; i < n; i++) j->bounds[i] = pool_cut(ptr, rows, ptr[rows] * i / n);
        __atomic_store_n(&pool_pending, pool_started, __ATOMIC_RELAXED);
        pthread_mutex_lock(&pool_m); /* so that no worker misses the wake-up below */
        __atomic_add_fetch(&pool_gen, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&pool_wake);
        pthread_mutex_unlock(&pool_m);
        pool_block(j, 0);
        for (int spins = 1; __atomic_load_n(&pool_pending, __ATOMIC_ACQUIRE); spins++) {
            pool_relax();
            if (spins % 1024 == 0) sched_yield(); /* a worker waits for a core */
        }
        pthread_mutex_unlock(&pool_busy);
        return 0;
    }
#endif
    (void)threads;
    t[kind](0, rows, ptr, pos, nb, codes, table, k, x, nbatch, out);
    return 0;
}

#ifndef DC_STANDALONE
/* Built as an extension module so that pip builds it; simd.py loads its library and calls
 * `dc_levels` and `dc_run` by name (the module itself is empty). */
static struct PyModuleDef dc_module = {PyModuleDef_HEAD_INIT, "_simd", NULL, -1, NULL,
                                       NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__simd(void) { return PyModule_Create(&dc_module); }
#endif
