"""`dc.compress` on a user-style CNN with BatchNorm on MNIST (examples/compress_cnn.py), with
its default settings and an ordinary loop, over seeds (issue 17).

    python benchmarks/bench_compress.py --data MNIST_DIR [--seeds 0 1 2]

Per seed: the dense model's and the decoded file's validation and test error, the file's
bytes and ratio (4 bytes per parameter / file size), and the wall time of the whole run
(dense training included). The budget is 0.1 points of validation error; the validation split
is the last 10,000 training images, the first half for every decision (`evaluate`), the second
for the held-out check of the file (`check`); the test split is read only for this report.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

from _common import cpu_name

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "compress_cnn.py"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("DEEPCOMPRESS_DATA"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--schedule", choices=["prune", "qat"], help="default: dc.compress's")
    p.add_argument("--qat", action="store_true", help="--schedule qat (the default now)")
    p.add_argument("--sharing", choices=["auto", "kmeans", "rd"], help="overrides the schedule's")
    p.add_argument("--trainable", choices=["codebook", "weights"], help="as --sharing")
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location("compress_cnn", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    schedule = "qat" if args.qat else args.schedule
    what = f"schedule {schedule or 'default'}, sharing {args.sharing}, trainable {args.trainable}"
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu_name()}, {what}")
    print("| seed | val error dense -> file | held out | test error dense -> file | bytes | ratio "
          "| s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["--data", args.data, "--seed", str(seed), "--out", tmp]
            for flag in ("schedule", "sharing", "trainable"):
                value = schedule if flag == "schedule" else getattr(args, flag)
                argv += [f"--{flag}", value] if value else []
            r = example.main(argv)
        print(
            f"| {seed} | {r['dense_val_error']:.2f}% -> {r['val_error']:.2f}% | "
            f"{r['dense_check_error']:.2f}% -> {r['check_error']:.2f}% | "
            f"{r['dense_test_error']:.2f}% -> {r['test_error']:.2f}% | {r['bytes']} | "
            f"{r['ratio']:.1f}x | {time.time() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
