"""The `deepcompress` command line. It only calls the public API and the reproduce pipeline.

Exit status: 0 success, 1 failure, 2 bad input (a missing or damaged file, a bad argument).
Errors print as one line on stderr; `--debug` shows the traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from ._optional import MissingExtra
from .cli_parser import parser
from .errors import FormatError


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
    if src.is_dir():
        raise IsADirectoryError(f"{args.file!r} is a folder: give the file in it")
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

    from .format.reader import read
    from .format.writer import atomic_path

    src, dst = _paths(args)
    file = read(src)  # as dc.load(src) does, keeping the header's meta
    state = {k: v.contiguous() for k, v in file.decode().items()}
    if "__metadata__" in state:  # safetensors' own key: its file would not load
        raise ValueError("a tensor is named '__metadata__', which safetensors reserves")
    # the input's own safetensors metadata, as `encode` kept it; "format" is what transformers
    # checks for (it refuses metadata without "pt", "tf", "flax" or "mlx" there)
    metadata = _string_map(file.meta.get("safetensors")) or {"source": src.name}
    metadata.setdefault("format", "pt")
    with atomic_path(dst) as tmp:
        save_file(state, str(tmp), metadata=metadata)
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
        detail = _one_line(e)
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
    from .api import encode_state_dict
    from .format.config import load_config, merged, pairs
    from .settings import matches

    src, dst = _paths(args)
    state, metadata = _read_checkpoint(src, args.file)
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
        if value is not None or (cfg.get(key, "") is None and flag is None and not flags):
            kw[key] = value  # the file's null is the API's None (quality: stored as is)
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
        meta={"source": src.name, **({"safetensors": metadata} if metadata else {})},
    )
    dense = 4 * sum(t.numel() for t in state.values())
    print(json.dumps({"tensors": len(state), "bytes": size, "ratio": round(dense / size, 2)}))
    return 0


def _one_line(e: Exception) -> str:
    """An exception's message on one line, at most 300 characters."""
    text = " ".join(str(e).split())
    return text if len(text) < 300 else text[:297] + "..."


def _string_map(value) -> dict[str, str]:
    """`value` if it is a {str: str} mapping (safetensors metadata), else {}."""
    ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    return dict(value) if ok else {}


def _read_checkpoint(src: Path, name: str) -> tuple[dict, dict[str, str]]:
    """`(tensors, safetensors metadata)` of a checkpoint file: a .safetensors file, or a
    PyTorch file (`torch.save`) of a state dict or of a dict holding exactly one (a training
    checkpoint's "state_dict" or "model" beside its optimizer's and epoch), read with
    `weights_only=True` (no code in it runs)."""
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(src), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, _string_map(f.metadata())
    except Exception as e:  # safetensors raises its own error types
        not_safetensors = _one_line(e)
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception:  # pickle's and torch's own errors (long, with terminal escapes)
        raise ValueError(
            f"{name!r} is neither a .safetensors file ({not_safetensors}) nor a PyTorch file "
            "that torch.load(weights_only=True) reads (a pickled model or other objects are "
            "refused: no code in a checkpoint runs); save model.state_dict()"
        ) from None

    def tensors(d) -> bool:
        return isinstance(d, dict) and all(isinstance(t, torch.Tensor) for t in d.values())

    if tensors(obj):
        return obj, {}
    inner = [k for k, v in obj.items() if tensors(v) and v] if isinstance(obj, dict) else []
    if len(inner) == 1:
        return obj[inner[0]], {}
    keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{name!r} holds no single state dict (found {keys}); save one alone")


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


def _shown(message) -> str:
    """A message for the terminal: tensor names come from the user's file, which may hold
    escape sequences (`format.inspect.printable`)."""
    from .format.inspect import printable

    return printable(str(message))


def _warn(message, *_, **__) -> None:
    print(f"deepcompress: warning: {_shown(message)}", file=sys.stderr)  # one line, as errors


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM as Ctrl-C: the file being written is removed (format.writer.atomic_path)
    was = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn
            if getattr(args, "quiet", False):
                warnings.simplefilter("ignore")
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
        print(f"deepcompress: error: {_shown(e)}", file=sys.stderr)
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
            f"deepcompress: failed: {type(e).__name__}: {_shown(e)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if was is not None:
            signal.signal(signal.SIGTERM, was)


if __name__ == "__main__":
    sys.exit(main())
