"""The `deepcompress` command line. It only calls the public API and the reproduce pipeline.

Exit status: 0 success, 1 failure, 2 bad input (a missing or damaged file, a bad argument).
Errors print as one line on stderr; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ._optional import MissingExtra
from ._version import __version__
from .coding.coders import ENTROPY_CHOICES
from .errors import FormatError

EXAMPLES = {
    "reproduce": "example: deepcompress reproduce lenet-300-100 --data ~/mnist --out runs/lenet",
    "demo": "example: deepcompress demo --out /tmp/demo",
    "decode": "example: deepcompress decode model.dcz -o model.safetensors",
    "warmup": "example: pip install deepcompress && deepcompress warmup",
    "encode": (
        "example: deepcompress encode model.safetensors -o model.dcz --size 2000000\n"
        "         deepcompress encode model.safetensors -o model.dcz --sparsity 0.5 --bits 6\n"
        "Without retraining, pruning and few bits cost accuracy: measure it on your data."
    ),
    "inspect": "example: deepcompress inspect model.dcz --json",
    "sensitivity": "example: deepcompress sensitivity lenet-5 --weights ref.safetensors --budget 1",
    "bench": "example: deepcompress bench model.dcz --batch 1 8",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcompress",
        description="Deep Compression for PyTorch: prune, share weights, Huffman-code.",
    )
    p.add_argument("--version", action="version", version=f"deepcompress {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.epilog = "exit status: 0 success, 1 failure, 2 bad input (a missing or damaged file)"
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    r = add("reproduce", "reproduce the paper's LeNet result on MNIST")
    r.add_argument("model", choices=["lenet-300-100", "lenet-5"])
    r.add_argument("--data", help="MNIST folder (default: $DEEPCOMPRESS_DATA)")
    r.add_argument("--out", default=".", help="output folder (default: current)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="multiply every training phase's epochs (quick checks)",
    )
    r.add_argument("--train-limit", type=int, help="train on the first N images only")
    r.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from OUT/<model>.ckpt"
    )
    r.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train on N local processes (torch.distributed, gloo on CPU)",
    )
    r.add_argument(
        "--recipe",
        choices=["paper", "best", "auto"],
        default="paper",
        help="the paper's settings, the smallest file at the paper's accuracy, or chosen by "
        "dc.compress within --budget",
    )
    r.add_argument("--budget", type=float, default=0.1, help="--recipe auto: error rise allowed")
    r.add_argument(
        "--bound",
        type=float,
        help="--recipe auto: the validation error (%%) the file may reach, instead of --budget",
    )
    r.add_argument("--schedule", choices=["prune", "qat"],
                   help="--recipe auto: dc.compress's schedule (default: its default)")  # fmt: skip
    r.add_argument("--device", help="where to train and run: cpu (default), cuda, cuda:1, ...")
    r.add_argument("--quiet", action="store_true", help="no progress output")

    d = add("demo", "the whole pipeline on scikit-learn's bundled digits, offline, in seconds")
    d.add_argument("--out", default=".", help="folder for demo.dcz and report.json")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", help="where to train and run: cpu (default), cuda, ...")
    d.add_argument("--quiet", action="store_true", help="no progress output")

    add("warmup", "compile the numba kernels into their on-disk cache (run once after install)")

    x = add("decode", "decode a .dcz file to dense weights in a .safetensors file")
    x.add_argument("file", help="the .dcz file")
    x.add_argument("-o", "--output", required=True, help="the .safetensors file to write")

    e = add("encode", "compress a .safetensors checkpoint's weights, with no retraining")
    e.add_argument("file", help="the .safetensors file")
    e.add_argument("-o", "--output", required=True, help="the .dcz file to write")
    e.add_argument(
        "--config",
        help="settings from a JSON or YAML file (keys: quality, size, sparsity, bits, index_bits, "
        "exclude, entropy, init; values or {pattern: value}); the flags below override it",
    )
    e.add_argument(
        "--quality",
        type=float,
        help="rate-distortion quality, -8..24: about the bits of precision below the model's RMS "
        "weight (default: near-lossless, deepcompress.encode.POSTTRAIN_QUALITY)",
    )
    e.add_argument("--size", type=int, help="the best quality whose file is at most SIZE bytes")
    e.add_argument(
        "--rd",
        type=float,
        help="rate's weight when a weight picks its level: 0 nearest (default), 1 entropy-"
        "constrained (smaller at equal squared error, with a dead zone)",
    )
    e.add_argument("--sparsity", type=float, help="fraction pruned, then --bits k-means")
    e.add_argument(
        "--sparsity-per-layer",
        nargs="+",
        default=[],
        metavar="PATTERN=S",
        help="per-layer sparsity by glob (or re:REGEX) on tensor or layer names; an exact name "
        "wins, else the first matching pattern",
    )
    e.add_argument("--bits", type=int, help="k-means codebook bits (default 8 with --sparsity)")
    e.add_argument("--bits-per-layer", nargs="+", default=[], metavar="PATTERN=B")
    e.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN", help="store as is")
    e.add_argument(
        "--entropy",
        choices=ENTROPY_CHOICES,
        help="entropy coder of each stream: the smallest (auto; on a stream of 2**20 symbols "
        "or more, CABAC only where it saves 3%%: it decodes bit by bit), strictly the smallest "
        "(smallest), or one, e.g. the paper's Huffman",
    )
    e.add_argument("--quiet", action="store_true", help="no progress output")

    s = add("sensitivity", "prune one layer at a time and measure validation error (Figure 6)")
    s.add_argument("model", choices=["lenet-300-100", "lenet-5", "digits-mlp"])
    s.add_argument(
        "--weights",
        required=True,
        help="trained dense weights (.safetensors), e.g. OUT/<model>-reference.safetensors",
    )
    s.add_argument("--data", help="MNIST folder (as for reproduce)")
    s.add_argument("--plot", help="write the curves to this PNG")
    s.add_argument(
        "--budget", type=float, help="also choose per-layer sparsities within this many points"
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")

    i = add("inspect", "show a .dcz file's header, tensors and streams; verify its checksums")
    i.add_argument("file", help="the .dcz file")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    b = add("bench", "per-layer latency of a .dcz file's layers, dense vs run compressed")
    b.add_argument("file", help="the .dcz file")
    b.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes")
    b.add_argument("--repeats", type=int, default=20)
    b.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _bench(args) -> int:
    from .format.inspect import format_bench
    from .runtime.modules import bench_file

    rows = bench_file(args.file, tuple(args.batch), args.repeats)
    print(json.dumps(rows, indent=2) if args.json else format_bench(rows, args.batch))
    return 0


def _inspect(args) -> int:
    from .format.inspect import describe, format_description

    d = describe(args.file)
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


def _reproduce(args, name: str, data=None, extra=None) -> int:
    from .pipeline.reproduce import run_parallel

    extra = extra or {}
    nproc = extra.pop("nproc", 1)
    report = run_parallel(nproc, name, args.out, data, seed=args.seed, quiet=args.quiet, **extra)
    print(report["table"])
    if name == "digits-mlp":
        print(
            f"accuracy: {100 - report['reference_test_error']:.2f}% before, "
            f"{100 - report['test_error']:.2f}% after (test split, decoded from {report['file']})"
        )
    else:
        print(
            f"test error: {report['reference_test_error']:.2f}% reference -> "
            f"{report['test_error']:.2f}% decoded from {report['file']}"
        )
    print(
        f"ratio {report['ratio']:.1f}x ({report['original_bytes']} -> "
        f"{report['compressed_bytes']} bytes) in {report['seconds']:.0f} s"
    )
    return 0


def _paths(args) -> tuple[Path, Path]:
    """The input and output paths of decode/encode, checked: the input exists, the output's
    folder exists, and the output is not the input."""
    src, dst = Path(args.file), Path(args.output)
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {args.file!r}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError("the output would overwrite the input file")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(dst.parent)!r} does not exist")
    if dst.is_dir():
        raise IsADirectoryError(f"{args.output!r} is a folder: give the name of the file to write")
    return src, dst


def _warmup() -> int:
    from .api import warmup

    print(f"kernels ready in {warmup():.1f} s")
    return 0


def _decode(args) -> int:
    from safetensors.torch import save_file

    from .api import load
    from .format.writer import atomic_path

    src, dst = _paths(args)
    state = {k: v.contiguous() for k, v in load(src).items()}
    if "__metadata__" in state:  # safetensors' own key: its file would not load
        raise ValueError("a tensor is named '__metadata__', which safetensors reserves")
    with atomic_path(dst) as tmp:
        save_file(state, str(tmp), metadata={"source": src.name})
    print(json.dumps({"tensors": len(state), "output": str(dst)}))
    return 0


def _sensitivity(args) -> int:
    from safetensors.torch import load_file

    from .analysis import auto_sparsity, plot_sensitivity, sensitivity
    from .pipeline.data import load_digits, load_mnist
    from .pipeline.models import build
    from .pipeline.train import error_rate

    if not Path(args.weights).is_file():
        raise FileNotFoundError(f"no such file: {args.weights!r}")
    model = build(args.model)
    try:
        model.load_state_dict(load_file(args.weights))
    except Exception as e:  # safetensors' own errors, or keys of another model
        detail = " ".join(str(e).split())  # one line
        detail = detail if len(detail) < 300 else detail[:297] + "..."
        raise ValueError(f"{args.weights!r} does not hold {args.model} weights: {detail}") from None
    model.eval()
    data = load_digits(0) if args.model == "digits-mlp" else load_mnist(args.data)

    def evaluate(m) -> float:
        return error_rate(m, data.val)

    table = sensitivity(model, evaluate, progress=True)
    result = {"validation_error": table}
    if args.budget is not None:
        result["auto_sparsity"] = auto_sparsity(model, evaluate, args.budget, table=table)
    if args.plot:
        plot_sensitivity(table, args.plot, ylabel="validation error (%)", title=args.model)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    layers = list(table["layers"])
    print(f"validation error (%), one layer pruned at a time; unpruned {table['baseline']:.2f}%")
    print("pruned  " + "".join(f"{n:>10}" for n in layers))
    for sp in table["sparsities"]:
        print(f"{100 * sp:5.0f}%  " + "".join(f"{table['layers'][n][sp]:10.2f}" for n in layers))
    if args.budget is not None:
        chosen = result["auto_sparsity"]
        print(
            f"auto_sparsity (+{args.budget:g} points): "
            + ", ".join(f"{n} {100 * v:.0f}%" for n, v in chosen.items())
        )
    return 0


def _encode(args) -> int:
    from safetensors.torch import load_file

    from .api import encode_state_dict
    from .format.config import load_config, merged, pairs
    from .settings import matches

    src, dst = _paths(args)
    try:
        state = load_file(str(src))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{args.file!r} is not a readable .safetensors file: {e}") from None
    cfg = load_config(args.config) if args.config else {}
    kw = {}
    for key, flag, per_layer, cast in (
        ("sparsity", args.sparsity, args.sparsity_per_layer, float),
        ("bits", args.bits, args.bits_per_layer, int),
        ("quality", args.quality, [], float),
    ):
        flags = pairs(per_layer, cast, f"--{key}-per-layer")
        # a flag's pattern wins over the file's keys it matches, exact names included
        own = cfg.get(key)
        if isinstance(own, dict):
            own = {k: v for k, v in own.items() if not any(matches(p, k) for p in flags)}
        value = merged(own, flag, flags)
        if value is not None:
            kw[key] = value
    for key in ("index_bits", "init", "size", "rd"):
        if key in cfg:
            kw[key] = cfg[key]
    for key in ("size", "rd"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if args.size is not None and args.quality is None and not isinstance(kw.get("quality"), dict):
        kw.pop("quality", None)  # the flag's size over the file's one quality for all
    if args.quality is not None and args.size is None:
        kw.pop("size", None)  # and the flag's quality over the file's size
    size = encode_state_dict(
        state,
        dst,
        **kw,
        exclude=[*cfg.get("exclude", []), *args.exclude],
        entropy=args.entropy or cfg.get("entropy", "auto"),
        progress=not args.quiet,
        meta={"source": src.name},
    )
    dense = 4 * sum(t.numel() for t in state.values())
    print(json.dumps({"tensors": len(state), "bytes": size, "ratio": round(dense / size, 2)}))
    return 0


def _run_reproduce(args) -> int:
    extra = {
        "epochs_scale": args.epochs_scale,
        "train_limit": args.train_limit,
        "resume": args.resume,
        "nproc": args.nproc,
        "recipe": args.recipe,
        "budget": args.budget,
        "bound": args.bound,
        "device": args.device,
        "auto_schedule": args.schedule,
    }
    return _reproduce(args, args.model, args.data, extra)


#: command -> its handler
COMMANDS = {
    "reproduce": _run_reproduce,
    "demo": lambda args: _reproduce(
        args, "digits-mlp", extra={"recipe": "auto", "budget": 0.3, "device": args.device}
    ),
    "inspect": _inspect,
    "bench": _bench,
    "encode": _encode,
    "sensitivity": _sensitivity,
    "decode": _decode,
    "warmup": lambda args: _warmup(),
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (
        FileNotFoundError,
        FormatError,
        ValueError,
        IsADirectoryError,
        PermissionError,
        MissingExtra,
    ) as e:
        if args.debug:
            raise
        print(f"deepcompress: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `deepcompress inspect x.dcz | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("deepcompress: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # a failure, not bad input: still one line unless --debug
        if args.debug:
            raise
        print(
            f"deepcompress: failed: {type(e).__name__}: {e} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
