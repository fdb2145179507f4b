"""Deep Compression of a user's own model in one call (`compress`), or as a schedule (`plan`).

    summary = dc.compress(model, train=train_fn, evaluate=eval_fn, out="model.dcz",
                          budget=0.1, lr=0.05)

`train_fn(model, *, epochs, lr, loss=None)` is the user's loop (it trains `model` in place for
`epochs` epochs at peak learning rate `lr`, minimising `loss(outputs, targets, inputs)` when
given, else its own loss); `eval_fn(model) -> float` is a validation error (lower is better,
any unit); `budget` is how much worse than the dense model the file's model may be, in that
unit; `lr` is the rate the dense model was trained at.

The two schedules (`phases.SCHEDULES`: the default "qat", quantization-aware rate-distortion
sharing without pruning rounds; "prune", the paper's order), each step, the held-out check,
distillation and the checkpoints are described in `docs/SCHEDULE.md`.

Users who keep their own loop (Lightning, Accelerate, DDP) drive the same schedule:

    for phase in dc.plan(model, evaluate=eval_fn, budget=0.1, lr=0.05):
        phase.apply(model)
        my_train(model, phase.epochs, phase.lr)
    dc.save(model, "model.dcz")
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from . import api, compress_report, retrain
from .analysis import sensitivity, tolerated_sparsity
from .checkpoint import read_meta, restore, save_checkpoint
from .devices import resolve as resolve_device
from .parametrizations import strip_
from .phases import (
    GRID,
    PRUNE_LR,
    TOLERANCE,
    Phase,
    Summary,
    back_off,
    check_arguments,
    check_exclude,
    check_sharing,
    earlier_file,
    edge,
    fmt,
    plan,
    prune_phases,
    qat_file,
    rounds_file,
    share_rate,
    share_settings,
    sparsities,
)
from .retrain import calibration_batches, distillation_loss, recalibrate_batchnorm, trainable_copy
from .runtime.energy import energy_view
from .selection import choose_bits, choose_quality, index_bits, shared_layers, step

PRUNE_SHARE = 0.7  # of the budget, what pruning may use before weight sharing
MAX_RETRIES = 3  # back-offs of one pruning round at most
PUSH = 0.6  # an extra round's kept fraction, of the last one's

Train = Callable[..., None]
Evaluate = Callable[[nn.Module], float]


def compress(
    model: nn.Module,
    *,
    train: Train,
    evaluate: Evaluate,
    out: str | os.PathLike,
    budget: float,
    lr: float,
    check: Evaluate | None = None,
    rounds: int = 3,
    extra: int = 2,
    epochs: int = 2,
    distill: float = 0.5,
    sharing: str = "rd",
    trainable: str | None = None,
    prune: bool = False,
    calibration: Iterable | None = None,
    resume: bool = False,
    seed: int = 0,
    entropy: str = "auto",
    raw_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_phase: Callable[[str, nn.Module, float], None] | None = None,
    report: str | os.PathLike | None = None,
    exclude: Iterable[str] = (),
) -> Summary:
    """Prune, retrain, share weights, fine-tune and save `model` within an error budget.

    Args:
        model: the trained model (on any device: every phase runs there), changed in place;
            use `summary.model`, the decoded model, afterwards. Every layer's weight and every
            float Parameter of 2+ dims (an LSTM's) is shared (docs/SCHEDULE.md).
        train: `train(model, *, epochs, lr, loss=None)`, the user's loop (module notes).
        evaluate: `evaluate(model) -> float`, validation error, lower is better.
        out: the file to write (atomically); `out` + ".ckpt" holds the checkpoints.
        budget: allowed rise of `evaluate` over the dense model, in its unit (>= 0).
        lr: the learning rate the dense model was trained at.
        check: `check(model) -> float`, the same error on data that `evaluate` never sees: it
            takes no decision but judges the file, backing pruning off while the decoded model
            breaks the budget by it (module notes, 4). Costs one checkpoint per pruning round
            on disk beside `out` and a fine-tuning per step back.
        rounds: pruning rounds; epochs: retraining epochs per round (the last round and the
            codebook fine-tuning get twice as many).
        extra: rounds past the planned ones that prune further while the budget holds (each
            retrains 2 x epochs); 0 stops at the sensitivity targets.
        distill: weight of the dense model's soft targets in retraining (0: the user's loss).
        sharing, trainable, prune: the schedule; the defaults are `phases.SCHEDULES["qat"]`,
            and `**SCHEDULES["prune"]` is the paper's order (module notes; chosen by a
            validation-only rule across three networks, RESULTS.md, issue 17).
        sharing: "kmeans" (the fewest bits per kind), "rd" (rate-distortion sharing at the
            lowest quality within the budget) or "auto" (both; the smaller file within it);
            either judged on the fine-tuned model decoded from the file (module notes).
        trainable: what rate-distortion sharing's fine-tuning trains: "codebook" (the levels)
            or "weights" (quantization-aware: the weights through the grid, at QAT_LR x lr;
            each step down in quality continues from the last one kept, while its decoded
            model keeps within the budget and its file is smaller). Not with "kmeans".
            None: "weights", or "codebook" with `sharing="kmeans"`.
        prune: False skips the sensitivity and pruning (sharing's zero level prunes).
        calibration: batches of inputs (or (inputs, ...) tuples) on which BatchNorm statistics
            are recomputed after each structural change: a list or a DataLoader (an iterator
            is read into a list first, since it is needed again after every change).
        resume: continue from `out` + ".ckpt" if it holds this same run.
        seed: each phase starts with `torch.manual_seed(seed + phase number)`.
        entropy: the file's coder choice (see `save`).
        raw_dtype: the dtype of the tensors stored as they are (biases, norms; see `save`):
            `torch.float16` halves them, judged with the rest on the decoded model.
        device: move `model` there first ("cuda", "cuda:1"; None: leave it where it is).
            Every phase runs on the model's device; `train` and `evaluate` get it there.
        progress: one line per phase on stderr.
        on_phase: called as `on_phase(stage, model, error)` when pruning is done ("pruned"),
            after weight sharing before fine-tuning ("shared": costs one more `evaluate`) and
            after fine-tuning ("fine-tuned"), for reports (the last two for every sharing
            tried).
        exclude: patterns (layer or tensor names, globs or `re:`) of weights never pruned or
            shared (stored as they are); a pattern that reaches none is refused.
        report: a folder for `report.md` (every phase tried with its error and bytes, the
            file's layers, the energy view) and, with matplotlib, its figures
            (`compress_report`).

    Returns:
        a `Summary` whose `error` is `evaluate` of the model decoded from the file (a
        UserWarning if no setting tried kept it within the budget). Parameters the user froze
        (`requires_grad=False`) stay frozen in every phase and in the returned model.

    Raises:
        ValueError: a negative budget, a non-positive lr, rounds or epochs < 1, `distill`
            outside [0, 1], `extra` < 0, an unknown `sharing` or `entropy`, a `raw_dtype` that
            is not a float dtype, a device this machine does not have.
        FileNotFoundError: `out`'s folder does not exist (checked before any work).
    """
    check_arguments(budget, lr, rounds, epochs, distill, extra, entropy, raw_dtype)
    exclude = check_exclude(model, exclude)
    calibration = calibration_batches(calibration)
    trainable = check_sharing(sharing, trainable)
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"no such folder for the file: {str(out.parent)!r}")
    if report is not None and Path(report).exists() and not Path(report).is_dir():
        raise NotADirectoryError(f"report must be a folder, not the file {str(report)!r}")
    dev = resolve_device(device)
    if dev is not None:
        model.to(dev)
    ckpt, dense_file = Path(f"{out}.ckpt"), Path(f"{out}.dense.ckpt")
    say = (lambda msg: print(f"compress: {msg}", file=sys.stderr)) if progress else (lambda m: None)
    settings = {"seed": seed, "budget": budget, "lr": lr, "rounds": rounds, "extra": extra,
                "epochs": epochs, "distill": distill, "sharing": sharing,
                "check": check is not None, "trainable": trainable, "prune": prune,
                "raw_dtype": str(raw_dtype), "entropy": entropy,
                "calibration": calibration is not None, "exclude": list(exclude)}  # fmt: skip
    state = None
    if resume and ckpt.is_file() and dense_file.is_file():
        state = read_meta(ckpt)
        if state.get("settings") != settings:
            say(f"{ckpt} holds another run's settings: starting afresh")
            state = None
    if state is None:
        dense = copy.deepcopy(model).eval()
        dense_error = float(evaluate(model))
        target = {}
        if prune:
            layers = shared_layers(model, exclude)
            table = sensitivity(model, evaluate, GRID, layers=layers, progress=progress)
            target = tolerated_sparsity(table, TOLERANCE * budget)
        state = {"settings": settings, "dense_error": dense_error, "target": target,
                 "done": 0, "history": [], "kept": [], "stopped": not prune,
                 "dense_check": None if check is None else float(check(model))}  # fmt: skip
        save_checkpoint(dense, dense_file, {})
        say(f"dense model: error {dense_error:.4g}; targets {fmt(target)}")
    else:
        strip_(model)  # the same model object, pruned in place before an interruption
        dense = copy.deepcopy(model)
        restore(dense, dense_file)
        restore(model, ckpt)
        say(f"resumed after pruning round {state['done']}" if prune else "resumed")
    frozen = {n for n, p in dense.named_parameters() if not p.requires_grad}  # the user's
    dense.eval().requires_grad_(False)
    limit = edge(state["dense_error"], budget)
    loss = distillation_loss(dense, distill) if distill > 0 else None
    net = model

    def run(phase: Phase, number: int) -> float:
        torch.manual_seed(seed + number)
        phase.apply(net)
        recalibrate_batchnorm(net, calibration)
        if on_phase is not None and phase.kind == "quantize":
            on_phase("shared", net, float(evaluate(net)))
        retrain.train_checked(train, net, epochs=phase.epochs, lr=phase.lr, loss=loss)
        err = float(evaluate(net))
        if on_phase is not None and phase.kind == "quantize":
            on_phase("fine-tuned", net, err)
        return err

    # Iterative pruning: a round that breaks the pruning share of the budget is undone and
    # retried with every layer it moved backed off halfway (MAX_RETRIES times at most); if it
    # still breaks it, pruning stops at the last round that kept within it. Past the planned
    # rounds, up to `extra` more cut every layer's kept fraction by PUSH while the budget
    # holds (the targets come from pruning without retraining, and retraining wins back more
    # than they assume), with one back-off each.
    retries, pruned_err = 0, state.get("pruned_error", state["dense_error"])
    while state["done"] < rounds + extra and not state.get("stopped"):
        r = state["done"]
        if r < rounds:
            phase = prune_phases(state["target"], rounds, epochs, lr)[r]
        else:
            if retries == 0:  # a new extra round: push the targets
                state["target"] = {n: 1 - (1 - t) * PUSH for n, t in state["target"].items()}
            phase = Phase("prune", 2 * epochs, PRUNE_LR * lr, sparsity=dict(state["target"]))
        before, was = copy.deepcopy(net), sparsities(net)
        err = run(phase, r)
        state["history"].append({"phase": "prune", "round": r + 1, "error": err,
                                 "sparsity": phase.sparsity})  # fmt: skip
        what = f"round {r + 1}/{rounds}" if r < rounds else f"extra round {r + 1 - rounds}"
        say(f"prune {what}: error {err:.4g} at {fmt(phase.sparsity)}")
        if err > edge(state["dense_error"], PRUNE_SHARE * budget):
            net = before
            limit_ = MAX_RETRIES if r < rounds else 1
            moved = back_off(state["target"], phase, was) if retries < limit_ else []
            if moved:
                say(f"over budget: {', '.join(moved)} backed off; retrying")
                retries += 1
                continue
            say(f"over budget: pruning stops after round {r}")
            state["stopped"] = True
            save_checkpoint(net, ckpt, state)
            break
        state["done"], state["pruned_error"], pruned_err, retries = r + 1, err, err, 0
        if check is not None:  # each accepted round's model, for the held-out check's back-off
            save_checkpoint(net, rounds_file(out, r + 1), {})
            state["kept"].append(r + 1)
        save_checkpoint(net, ckpt, state)

    # weight sharing at the fewest bits (lowest quality) whose quantized model stays within the
    # budget, stepped up or down (below); "auto" keeps the smaller file of both within it.
    pruned = copy.deepcopy(net)
    if on_phase is not None:
        on_phase("pruned", net, pruned_err)
    found, modes = [], ("kmeans", "rd") if sharing == "auto" else (sharing,)
    ok = max(limit, pruned_err)  # more bits cannot win back what pruning cost

    def attempt(mode: str, setting, path: Path, start: nn.Module | None = None) -> tuple:
        """Share the pruned model (or `start`, a fine-tuned one) at `setting`, fine-tune, write
        `path`, measure the file: (error of the decoded model, bytes, decoded model, index
        bits); `net` is the fine-tuned model."""
        nonlocal net
        rd, net = mode == "rd", copy.deepcopy(pruned if start is None else start)
        share = share_settings(net, setting, rd, trainable, exclude)
        err = run(Phase("quantize", 2 * epochs, share_rate(rd, trainable, lr), **share), rounds)
        bits = index_bits(net)
        size = api.save(net, path, entropy=entropy, raw_dtype=raw_dtype, progress=False)
        decoded = api.load(path, model=trainable_copy(dense, frozen))
        error = float(evaluate(decoded))
        state["history"].append({"phase": "quantize", "sharing": mode,
                                 "quality" if rd else "bits": setting, "error": error,
                                 "bytes": size})  # fmt: skip
        shown = f"quality {setting:g}" if rd else f"{fmt(setting)} bits"
        say(f"weight shared at {shown}: error {err:.4g}, from the file {error:.4g}, "
            f"{size} bytes")  # fmt: skip
        return error, size, decoded, bits

    earlier: list = []  # quantization-aware steps kept before the last: (setting, got, file)
    steps = state.setdefault("qat", [])  # and all of them as checkpointed, for resume
    if steps:  # resumed: k-means runs again (never checkpointed), its trials listed once
        state["history"] = [h for h in state["history"] if h.get("sharing") != "kmeans"]

    def keep(setting, got: tuple, model: nn.Module) -> None:
        """Checkpoint a kept quantization-aware step (its float weights train on)."""
        save_checkpoint(model, qat_file(out, len(steps)), {})
        steps.append({"setting": setting, "error": got[0], "bytes": got[1], "bits": got[3]})
        save_checkpoint(pruned, ckpt, state)

    def restored(i: int, path: Path) -> tuple:
        """Step `i` back from its checkpoint, its file rewritten to `path`: (model, got)."""
        restore(m := trainable_copy(dense, frozen), qat_file(out, i))
        size = api.save(m, path, entropy=entropy, raw_dtype=raw_dtype, progress=False)
        if size != steps[i]["bytes"]:  # (path is not in `earlier` yet: removed here)
            path.unlink(missing_ok=True)
            raise RuntimeError(f"{qat_file(out, i)} does not give the file it recorded: delete "
                               f"{ckpt} to start afresh")  # fmt: skip
        decoded = api.load(path, model=trainable_copy(dense, frozen))
        return m, (steps[i]["error"], steps[i]["bytes"], decoded, steps[i]["bits"])

    try:  # the candidates beside `out` go, whatever happens (a run that fails included)
        for mode in modes:
            rd, path = mode == "rd", Path(f"{out}.{mode}.tmp")
            progressive = rd and trainable == "weights"  # quantization-aware steps
            trial_path = Path(f"{out}.{mode}.trial.tmp")
            if progressive and steps:  # resumed: back to the steps kept, files as written
                for i in range(len(steps) - 1):
                    file = earlier_file(out, i)
                    earlier.append((steps[i]["setting"], restored(i, file)[1], file))
                last, got = restored(len(steps) - 1, path)
                setting, climbed = steps[-1]["setting"], False
                say(f"resumed at quality {setting:g}")
            else:
                if rd:
                    setting = choose_quality(
                        copy.deepcopy(pruned), evaluate, limit, trainable, exclude
                    )
                else:
                    setting = choose_bits(copy.deepcopy(pruned), evaluate, limit, exclude)
                # up one step while the decoded model breaks the budget ...
                got, climbed = attempt(mode, setting, path), False
                while got[0] > ok and (up := step(setting, rd, 1)) is not None:
                    setting, got, climbed = up, attempt(mode, up, path), True
                last = net
                if progressive and not climbed and got[0] <= ok:
                    keep(setting, got, last)
            # ... or, if it kept within it at once, down one step while the next one's file,
            # fine-tuned, is smaller and its decoded model no worse: spending none of the
            # budget, so as not to spend it on a small validation set's noise. Quantization-
            # aware steps retrain (as pruning rounds do): each continues from the last one
            # kept and may spend the budget.
            while not climbed and got[0] <= ok and (down := step(setting, rd, -1)) is not None:
                lower = attempt(mode, down, trial_path, last if progressive else None)
                if lower[0] > (ok if progressive else got[0]) or lower[1] >= got[1]:
                    break
                if progressive:  # kept for the held-out check to step back to
                    earlier.append((setting, got, earlier_file(out, len(earlier))))
                    os.replace(path, earlier[-1][2])
                os.replace(trial_path, path)
                setting, got, last = down, lower, net
                if progressive:
                    keep(setting, got, last)
            broke = got[0] > ok
            found.append(((broke, got[0] if broke else got[1]), mode, path, setting, got))
        _, mode, path, setting, (error, size, decoded, bits) = min(found, key=lambda f: f[0])
        checked = None
        if check is not None:  # judge the file on the held-out data; back off while it breaks
            rd, kept = mode == "rd", list(state["kept"])
            while (checked := float(check(decoded))) > edge(state["dense_check"], budget):
                if rd and earlier:  # the quantization-aware step before, as it was: no retraining
                    state["history"].append({"phase": "check", "error": checked})
                    setting, (error, size, decoded, bits), file = earlier.pop()
                    os.replace(file, path)
                    say(f"held-out check {checked:.4g} breaks the budget: back to {setting:g}")
                    continue
                if len(kept) > 1:
                    kept.pop()
                    pruned = trainable_copy(dense, frozen)
                    restore(pruned, rounds_file(out, kept[-1]))
                    why = f"back to pruning round {kept[-1]}"
                elif (up := step(setting, rd, 1)) is not None:
                    setting, why = up, f"sharing one step up ({up})"
                else:
                    break
                say(f"held-out check {checked:.4g} breaks the budget: {why}")
                state["history"].append({"phase": "check", "error": checked})
                error, size, decoded, bits = attempt(mode, setting, path)
        os.replace(path, out)
    finally:
        for m in modes:
            Path(f"{out}.{m}.tmp").unlink(missing_ok=True)
            Path(f"{out}.{m}.trial.tmp").unlink(missing_ok=True)
        for _, _, file in earlier:
            file.unlink(missing_ok=True)
    quality = setting if mode == "rd" else None
    params = sum(p.numel() for p in dense.parameters() if p.is_floating_point())
    summary = Summary(
        path=out, bytes=size, ratio=4 * params / size, error=error,
        dense_error=state["dense_error"], model=decoded, sparsity=sparsities(decoded),
        bits=bits, history=state["history"], quality=quality, energy=energy_view(out),
        check_error=checked, dense_check_error=state.get("dense_check"),
    )  # fmt: skip
    say(f"{out}: {size} bytes, {summary.ratio:.1f}x, error {error:.4g} "
        f"(dense {state['dense_error']:.4g}, budget {budget:g}); weight reads "
        f"{summary.energy['saving']:.1f}x less energy (45 nm estimate)")  # fmt: skip
    if error > limit:  # every setting tried broke it: the file is the last one, over budget
        warnings.warn(f"{out}: error {error:.4g} breaks the budget (dense "
                      f"{state['dense_error']:.4g} + {budget:g}): no setting tried kept within "
                      "it; the file holds the most precise one tried", stacklevel=2)  # fmt: skip
    if checked is not None:
        broke = checked > edge(state["dense_check"], budget)
        say(
            f"held-out check {checked:.4g} (dense {state['dense_check']:.4g})"
            + (": over the budget, with nothing left to back off" if broke else "")
        )
    rounds_ = (rounds_file(out, r) for r in state.get("kept", []))
    for f in (ckpt, dense_file, *rounds_, *(qat_file(out, i) for i in range(len(steps)))):
        f.unlink(missing_ok=True)
    if report is not None:
        say(f"report: {compress_report.write(summary, dense, report, budget)}")
    return summary


__all__ = ["Phase", "Summary", "compress", "plan"]
