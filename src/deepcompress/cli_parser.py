"""The `deepcompress` command line's arguments (`parser`); `cli` runs the commands."""

from __future__ import annotations

import argparse

from ._version import __version__
from .coding.coders import ENTROPY_CHOICES

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


def parser() -> argparse.ArgumentParser:
    """The command line's arguments: one subcommand per job, each with an example."""
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

    e = add("encode", "compress a checkpoint's weights (.safetensors or .pt), with no retraining")
    e.add_argument(
        "file", help="the checkpoint: .safetensors, or a torch.save'd state dict (.pt, .pth)"
    )
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
