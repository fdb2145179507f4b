"""The threads the runtime's kernels run on: threads of our own, not numba's OpenMP or TBB
layer. The C kernels run on the C library's pthread pool (`dc_run_pool` in _simd.c, whose
workers spin a moment between products, so that batch-1 calls stay as fast as on OpenMP); the
numba loops of `kernels` (the "entries" layout, and every layout without the C extension) on
the Python threads of `run_rows` here. The same rules hold for both.

Each product is split into contiguous blocks of rows, each holding about the same number of
kept weights; the calling thread runs the first block and the pool's threads the others (here
in numba functions compiled with `nogil=True`, so they run side by side while the GIL is
released). Why not `parallel=True`: numba's OpenMP layer kills a fork()ed child that runs a
kernel after its parent did (multiprocessing's fork start method, gunicorn's preload), ignores
and then changes torch's thread count (they share libgomp), and numba's workqueue layer aborts
the process when two Python threads call a kernel at once.

How many threads: torch's count (`torch.get_num_threads()`: `torch.set_num_threads`,
OMP_NUM_THREADS), read at each call, so the runtime uses the cores torch is told to; one for a
product of fewer than `SERIAL_WORK` kept weights x inputs (a few microseconds: not worth
waking a thread for), or the count `modules.autotune_` chose for that product, at most torch's.
A pool serves one product at a time: a call made while another thread's product holds it
runs on its calling thread alone (the cores are busy anyway). A fork()ed child starts with an
empty pool (`os.register_at_fork`; `pthread_atfork` for the C one), so it runs the kernels as
its parent did.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

SERIAL_WORK = 1 << 14  # kept weights x inputs below which one thread runs the whole product


class _Worker:
    """One pool thread: it waits on `go`, runs `job`, and releases `done`."""

    def __init__(self):
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.job: tuple | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._loop, name="deepcompress-runtime", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.go.acquire()
            fn, args = self.job
            self.job = None
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
                self.error = e
            self.done.release()


_workers: list[_Worker] = []
_busy = threading.Lock()  # held while a product runs on the pool


def _reset_after_fork() -> None:
    """In a fork()ed child: the parent's pool threads do not exist here, start afresh."""
    global _busy
    _workers.clear()
    _busy = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def threads_for(work: int, planned: int | None = None) -> int:
    """The threads a product of `work` kept weights x inputs runs on: `planned` (autotune's)
    if given, else one below SERIAL_WORK, else all; never more than torch's count."""
    most = torch.get_num_threads()
    if planned is not None:
        return max(1, min(planned, most))
    return 1 if work < SERIAL_WORK else most


def run_rows(fn, args: tuple, ptr: np.ndarray, threads: int) -> None:
    """`fn(*args, r0, r1)` over the rows 0..rows of `ptr` (rows + 1 entry starts, ascending),
    on up to `threads` threads, each a block of rows with about the same number of entries."""
    rows = ptr.shape[0] - 1
    nt = min(threads, rows)
    if nt <= 1 or not _busy.acquire(blocking=False):
        fn(*args, 0, rows)
        return
    busy = _busy  # the lock to release, even if a fork in another thread replaced it
    try:
        while len(_workers) < nt - 1:
            _workers.append(_Worker())
        total = int(ptr[rows])
        cuts = np.searchsorted(ptr, np.arange(1, nt, dtype=np.int64) * total // nt)
        bounds = [0, *np.minimum(cuts, rows).tolist(), rows]
        used = _workers[: nt - 1]
        for i, w in enumerate(used, 1):
            w.job = (fn, (*args, bounds[i], bounds[i + 1]))
            w.go.release()
        try:
            fn(*args, 0, bounds[1])
        finally:
            for w in used:
                w.done.acquire()
        for w in used:
            if w.error is not None:
                error, w.error = w.error, None
                raise error
    finally:
        busy.release()
