"""The digits demo's runs for choosing `dc.compress`'s default schedule (RESULTS.md, "Choosing
`dc.compress`'s default schedule"): `reproduce digits-mlp --recipe auto --budget 0.3` (the
demo's call) under each schedule of `phases.SCHEDULES`, several seeds. It prints what the rule
reads, the decoded file's validation error and its bytes; the test split's figure only with
`--test` (read after the choice).

    python benchmarks/select_schedule.py --seeds 0 1 2 [--test]
"""

import argparse
import math
import tempfile

from deepcompress.phases import SCHEDULES
from deepcompress.pipeline.reproduce import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=float, default=0.3, help="the demo's budget")
    p.add_argument("--test", action="store_true", help="also print the test error")
    args = p.parse_args()
    sizes: dict[str, list[int]] = {s: [] for s in SCHEDULES}
    print("| schedule | seed | validation error %, reference -> file | within | bytes | ratio |"
          + (" test error % |" if args.test else ""))  # fmt: skip
    for name in SCHEDULES:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                r = run("digits-mlp", out, recipe="auto", budget=args.budget, seed=seed,
                        quiet=True, auto_schedule=name)  # fmt: skip
            ok = r["val_error"] <= r["reference_val_error"] + args.budget + 1e-9
            sizes[name].append(r["compressed_bytes"])
            test = (f" {r['reference_test_error']:.2f} -> {r['test_error']:.2f} |"
                    if args.test else "")  # fmt: skip
            print(f"| {name} | {seed} | {r['reference_val_error']:.2f} -> {r['val_error']:.2f} "
                  f"| {'yes' if ok else 'NO'} | {r['compressed_bytes']} | {r['ratio']:.1f}x |"
                  + test, flush=True)  # fmt: skip
    gm = {n: math.exp(sum(map(math.log, v)) / len(v)) for n, v in sizes.items()}
    print("geometric mean bytes: " + ", ".join(f"{n} {g:.0f}" for n, g in gm.items()))


if __name__ == "__main__":
    main()
