"""A fast end-to-end run of `reproduce` on a small MNIST subset."""

import json

import pytest
import torch
from plots import assert_plot_png

import deepcompress as dc
from deepcompress.pipeline import recipes, reproduce
from deepcompress.pipeline.data import load_mnist
from deepcompress.pipeline.models import LeNet5
from deepcompress.pipeline.train import error_rate


def test_schedule_reaches_the_target_geometrically():
    s = recipes.schedule({"a": 0.08}, 3)
    kept = [1 - r["a"] for r in s]
    assert abs(kept[-1] - 0.08) < 1e-12 and kept[0] > kept[1] > kept[2]
    assert abs(kept[1] ** 2 - kept[0] * kept[2]) < 1e-12


def test_reproduce_lenet5_small(tmp_path, mnist_dir):
    rep = reproduce.run(
        "lenet-5", tmp_path, mnist_dir, quiet=True, epochs_scale=0.04, train_limit=3000
    )
    on_disk = json.loads((tmp_path / "report.json").read_text())
    for key in (
        "model",
        "reference_test_error",
        "test_error",
        "original_bytes",
        "compressed_bytes",
        "ratio",
        "layers",
    ):
        assert key in on_disk
    dcz = tmp_path / "lenet-5.dcz"
    assert on_disk["compressed_bytes"] == dcz.stat().st_size
    assert on_disk["original_bytes"] == 4 * 431080
    assert on_disk["ratio"] == on_disk["original_bytes"] / on_disk["compressed_bytes"]
    # the reported error is the decoded file's
    net = dc.load(dcz, model=LeNet5())
    assert error_rate(net, load_mnist(mnist_dir).test) == rep["test_error"]
    kept = {r["layer"]: r["kept"] for r in on_disk["layers"]}
    for layer, want in recipes.RECIPES["lenet-5"].kept.items():
        assert abs(kept[layer] - want) < 0.01
    assert on_disk["test_error"] < 25  # it learnt something (chance is 90%), in a few steps
    bits = recipes.RECIPES["lenet-5"].bits
    want = {
        "conv1": bits["conv"],
        "conv2": bits["conv"],
        "ip1": bits["linear"],
        "ip2": bits["linear"],
    }
    assert {r["layer"]: r["weight_bits"] for r in on_disk["layers"]} == want
    w = dc.load(dcz)["conv1.weight"]
    assert len(torch.unique(w)) <= 2 ** bits["conv"] + 1  # the codebook and zero
    # the reference model is cached for the next run
    assert (tmp_path / "lenet-5-reference.safetensors").exists()
    # the report and its figures
    report_md = (tmp_path / "report.md").read_text()
    for png in ("weights.png", "bytes.png", "accuracy.png"):
        assert f"]({png})" in report_md
        assert_plot_png(tmp_path / png)


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5"])
def test_best_recipe_runs_and_uses_its_settings(tmp_path, mnist_dir, name):
    rep = reproduce.run(
        name,
        tmp_path,
        mnist_dir,
        quiet=True,
        epochs_scale=0.04,
        train_limit=2000,
        recipe="best",
    )
    best = recipes.BEST[name]
    kept = {r["layer"]: r["kept"] for r in rep["layers"]}
    for layer, want in best.kept.items():
        assert abs(kept[layer] - want) < 0.01
    # rate-distortion sharing, trained through the grid: every layer stored on a grid
    assert best.quality is not None and best.trainable == "weights"
    from deepcompress.format.reader import read

    grids = {r.name: r.params.get("grid") for r in read(tmp_path / f"{name}.dcz").records
             if r.codec == "shared"}  # fmt: skip
    assert set(grids) == {f"{n}.weight" for n in best.kept} and None not in grids.values()
    state = dc.load(tmp_path / f"{name}.dcz")
    assert state["ip1.bias"].dtype == torch.float16  # the lean header's float16 biases
    # and the paper recipe stays the paper's: Huffman streams, float32 biases
    assert recipes.recipe_for("lenet-300-100", "paper").entropy == "huffman"
    try:
        recipes.recipe_for("lenet-300-100", "fastest")
    except ValueError as e:
        assert "paper" in str(e)
    else:
        raise AssertionError("an unknown recipe was accepted")


def test_best_lenet5_distills_from_the_dense_model(tmp_path, mnist_dir, monkeypatch):
    from deepcompress.pipeline import train as train_module

    teachers = []
    real_train = train_module.train

    def spy(model, data, cfg, **kw):
        teachers.append((cfg.distill, kw.get("teacher")))
        return real_train(model, data, cfg, **kw)

    monkeypatch.setattr(reproduce, "train", spy)
    reproduce.run(
        "lenet-5", tmp_path, mnist_dir, quiet=True, epochs_scale=0.02, train_limit=600,
        recipe="best",
    )  # fmt: skip
    dense, *compression = teachers
    assert dense == (0.0, None)  # the reference trains alone
    assert len(compression) == 4 and all(d == 0.7 for d, _ in compression)
    teacher = compression[0][1]
    assert teacher is not None and all(t is teacher for _, t in compression)
    assert not any(p.requires_grad and p.grad is not None for p in teacher.parameters())


def test_recipe_auto_takes_its_budget_from_a_bound(tmp_path):
    with pytest.raises(ValueError, match="already at the bound"):
        reproduce.run("digits-mlp", tmp_path, quiet=True, epochs_scale=0.2, recipe="auto", bound=0)
    assert not (tmp_path / "demo.dcz").exists()
    rep = reproduce.run(
        "digits-mlp", tmp_path, quiet=True, epochs_scale=0.2, recipe="auto", bound=6.0
    )
    budget = rep["recipe"]["auto"]["budget"]
    assert budget == pytest.approx(6.0 - rep["reference_val_error"]) and budget > 0
    assert rep["val_error"] <= 6.0 + 1e-9  # the decoded file keeps within the bound


@pytest.mark.parametrize("schedule", [None, "prune"])
def test_recipe_auto_runs_the_schedule_named(schedule, tmp_path, monkeypatch):
    """`--schedule` reaches `dc.compress` as `phases.SCHEDULES`' arguments (none: its
    defaults), and the report records it."""
    from deepcompress import phases
    from deepcompress import schedule as schedule_module

    seen, real = [], schedule_module.compress
    monkeypatch.setattr(
        schedule_module, "compress", lambda *a, **kw: seen.append(kw) or real(*a, **kw)
    )
    rep = reproduce.run("digits-mlp", tmp_path, quiet=True, epochs_scale=0.2, recipe="auto",
                        auto_schedule=schedule)  # fmt: skip
    given = {k: seen[0][k] for k in ("prune", "sharing", "trainable") if k in seen[0]}
    assert given == phases.SCHEDULES.get(schedule, {})
    assert rep["recipe"]["auto"]["schedule"] == schedule
    first = "pruned + retrained" if schedule == "prune" else "before sharing (no pruning rounds)"
    assert rep["pruned"] == (schedule == "prune")
    assert f"| {first} |" in (tmp_path / "report.md").read_text()  # the report says which
    if schedule is None:  # the stages shown are the kept file's, not the last step refused
        assert rep["finetuned_val_error"] == pytest.approx(rep["val_error"])
    with pytest.raises(ValueError, match="schedule must be one of"):
        reproduce.run("digits-mlp", tmp_path / "x", quiet=True, recipe="auto", auto_schedule="qta")
    assert not (tmp_path / "x").exists()  # refused before any work


def test_a_recipe_with_a_quality_shares_weights_by_rate_distortion():
    """`Recipe.quality` makes the sharing stage rate-distortion sharing (zero one of its
    levels, so it prunes the smallest weights itself) instead of the recipe's k-means bits."""
    from dataclasses import replace

    from deepcompress.pipeline.data import load_digits
    from deepcompress.pipeline.models import build

    data = load_digits(0)
    recipe = recipes.RECIPES["digits-mlp"].scaled(0.05)
    zeros = {}
    for quality in (None, 0.0):
        torch.manual_seed(0)
        model = build("digits-mlp")
        reproduce.share_and_finetune(model, data, replace(recipe, quality=quality), quiet=True)
        zeros[quality] = float((model.ip1.weight == 0).float().mean())
    assert zeros[None] == 0.0  # k-means on an unpruned layer: no weight becomes zero
    assert zeros[0.0] > 0.2  # rate-distortion sharing sends the many small weights to zero


def test_a_recipe_that_trains_the_weights_through_the_grid_moves_them_between_levels():
    """`Recipe.trainable="weights"`: the sharing stage fine-tunes the weights themselves (each
    rounded to the quality's grid), so weights change level, which centroid fine-tuning never
    does."""
    import copy
    from dataclasses import replace

    from deepcompress.parametrizations import Snapped, shared_parts
    from deepcompress.pipeline.data import load_digits
    from deepcompress.pipeline.models import build

    data = load_digits(0)
    recipe = recipes.RECIPES["digits-mlp"].scaled(0.05)
    torch.manual_seed(0)
    model = build("digits-mlp")
    fresh = dc.quantize_(copy.deepcopy(model), quality=1.0, trainable="weights")
    start = shared_parts(fresh.ip1).idx
    reproduce.share_and_finetune(
        model, data, replace(recipe, quality=1.0, trainable="weights"), quiet=True
    )
    assert isinstance(model.ip1.parametrizations.weight[0], Snapped)
    assert (shared_parts(model.ip1).idx != start).any()
