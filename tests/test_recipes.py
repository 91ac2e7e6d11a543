"""The papers' recipes: run-configuration files that load, state the official configs'
values, schedule the learning rate as those configs do, and the `hrnet-edge recipes`
command that lists, prints and copies them. No training here."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from hrnet_edge import recipes
from hrnet_edge.cli import main
from hrnet_edge.errors import DataError
from hrnet_edge.runconfig import TrainConfig, load_run_config
from hrnet_edge.training.distributed import World
from hrnet_edge.training.loop import lr_at

NAMES = recipes.names()


def _load(name):
    return load_run_config(recipes.recipe_path(name))


def test_the_papers_recipes_are_shipped():
    tasks = {recipes.info(n).task for n in NAMES}
    assert tasks == {"pose", "seg", "cls"}
    assert {"pose-coco-w32-256x192", "pose-coco-w32-384x288", "seg-cityscapes-w48",
            "cls-imagenet-w18", "cls-imagenet-w48"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_loads_and_sets_every_train_value(name):
    path = recipes.recipe_path(name)
    raw = tomllib.loads(path.read_text())
    cfg = _load(name)  # the run-config parser: every key checked
    from hrnet_edge.pipeline.stages import check_export_plan

    check_export_plan(cfg)  # the rest of what train and pipeline check before writing anything
    meta = recipes.info(name)
    assert cfg.model == meta.model and cfg.task.name == meta.task
    assert cfg.model_config().input_size == meta.input_size == tuple(raw["model_overrides"]["input_size"])
    assert cfg.train.epochs == meta.epochs
    # nothing comes from the built-in quick recipe: every [train] value is in the file
    # (None-default fields, such as lr_reference_batch, can only be left out in TOML)
    needed = {f.name for f in dataclasses.fields(TrainConfig) if f.default is not None}
    assert needed <= set(raw["train"]), sorted(needed - set(raw["train"]))
    # real data through a placeholder the user edits, never the built-in synthetic set
    assert cfg.data.root is not None and not Path(cfg.data.root).exists()
    assert set(recipes.HEADER_KEYS) <= set(recipes.header(path.read_text()))
    assert cfg.recorded == raw.get("recorded", {})


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("pose-")])
def test_pose_recipes_state_the_official_config(name):
    cfg = _load(name)
    t, d = cfg.train, cfg.data
    # Adam lr 1e-3 without weight decay, x0.1 at 170 and 200 of 210, 32 per GPU
    assert (t.optimizer, t.lr, t.weight_decay) == ("adamw", 1e-3, 0.0)
    assert (t.schedule, t.milestones, t.epochs, t.batch_size, t.warmup_epochs) == ("step", (170, 200), 210, 32, 0)
    assert (d.rotation, d.scale_factor, d.flip) == (45.0, 0.35, True)
    assert d.sigma == (3.0 if cfg.model_config().input_size == (384, 288) else 2.0)
    assert cfg.eval.flip_test is True and d.train_split == "train2017" and d.val_split == "val2017"
    assert cfg.recorded["half_body_prob"] == 0.3 and cfg.recorded["half_body_joints"] == 8


def test_seg_recipe_states_the_official_config():
    cfg = _load("seg-cityscapes-w48")
    t, m = cfg.train, cfg.model_config()
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.nesterov) == ("sgd", 0.01, 0.9, 5e-4, False)
    assert (t.schedule, t.poly_power, t.epochs, t.batch_size, t.lr_reference_batch) == ("poly", 0.9, 484, 3, 12)
    assert m.input_size == (512, 1024) and m.num_outputs == 19 and cfg.data.format == "cityscapes"
    assert m.backbone.upsample_mode == "bilinear" and t.sync_bn
    assert "imagenet_init" in cfg.recorded and cfg.init.path is None


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("cls-")])
def test_cls_recipes_state_the_official_config(name):
    cfg = _load(name)
    t, m = cfg.train, cfg.model_config()
    assert (t.optimizer, t.lr, t.momentum, t.nesterov, t.weight_decay) == ("sgd", 0.05, 0.9, True, 1e-4)
    assert (t.schedule, t.milestones, t.epochs, t.batch_size, t.lr_reference_batch) == \
        ("step", (30, 60, 90), 100, 32, 128)
    assert m.input_size == (224, 224) and m.num_outputs == 1000 and t.label_smoothing == 0.0
    assert f"w{m.backbone.width}" in name


def _epoch_lrs(t, steps_per_epoch):
    """The rate the training loop sets at the first and the last step of each epoch."""
    total = steps_per_epoch * t.epochs
    out = []
    for epoch in range(t.epochs):
        first, last = epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1
        out.append(tuple(lr_at(s, total, steps_per_epoch * t.warmup_epochs, t.lr, t.schedule, t.poly_power,
                               t.milestones, steps_per_epoch) for s in (first, last)))
    return out


@pytest.mark.parametrize("name", ["pose-coco-w32-256x192", "cls-imagenet-w18"])
def test_multi_step_lr_per_epoch(name):
    t = _load(name).train
    lrs = _epoch_lrs(t, steps_per_epoch=5)
    for epoch, (first, last) in enumerate(lrs):
        drops = sum(epoch >= m for m in t.milestones)
        assert first == last == pytest.approx(t.lr * 0.1 ** drops), epoch  # constant within an epoch
    # dropped exactly at the milestones, by 10x each time, and nowhere else
    changes = [e for e in range(1, t.epochs) if lrs[e][0] != lrs[e - 1][0]]
    assert changes == list(t.milestones)
    assert all(lrs[m][0] == pytest.approx(lrs[m - 1][0] / 10) for m in t.milestones)


def test_poly_lr_per_epoch():
    t = _load("seg-cityscapes-w48").train
    spe = 4
    lrs = _epoch_lrs(t, steps_per_epoch=spe)
    total = spe * t.epochs
    for epoch, (first, last) in enumerate(lrs):
        assert first == pytest.approx(t.lr * (1 - epoch * spe / total) ** t.poly_power)
        assert last == pytest.approx(t.lr * (1 - ((epoch + 1) * spe - 1) / total) ** t.poly_power)
    assert lrs[0][0] == t.lr and all(a[0] > b[0] for a, b in zip(lrs, lrs[1:]))  # falls every epoch
    assert 0 < lrs[-1][1] < t.lr * 0.01  # close to zero at the end


@pytest.mark.parametrize("name", ["seg-cityscapes-w48", "cls-imagenet-w18"])
def test_batch_per_gpu_and_the_linear_scaling_rule(name):
    """On the official number of GPUs the paper's lr is used as is; on fewer processes it
    scales with the total batch (batch_size is per process)."""
    t = _load(name).train
    gpus = _load(name).recorded["gpus"]
    assert t.batch_size * gpus == t.lr_reference_batch
    assert World(size=gpus).lr_scale(t.batch_size, t.lr_reference_batch) == 1.0
    assert World(size=1).lr_scale(t.batch_size, t.lr_reference_batch) == pytest.approx(1 / gpus)


def test_train_prints_recorded_values_and_refuses_the_placeholder_root(tmp_path):
    from hrnet_edge.runs import init_run, open_run
    from hrnet_edge.training.loop import train

    cfg = _load("pose-coco-w32-256x192")
    run = init_run(tmp_path / "run", cfg)
    lines = []
    with pytest.raises(DataError, match="does not exist"):  # the placeholder, not synthetic data
        train(run, cfg, progress=False, log=lines.append)
    recorded = [line for line in lines if "recorded only, not applied" in line]
    assert len(recorded) == 1 and "half_body_prob=0.3" in recorded[0] and "half_body_joints=8" in recorded[0]
    assert open_run(run.root)[1].recorded == cfg.recorded  # kept in config.json


# --- the command ---------------------------------------------------------------------------
def test_cli_lists_the_recipes(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in NAMES:
        meta = recipes.info(name)
        row = next(line for line in out if line.startswith(name + " "))
        assert row.split()[1:3] == [meta.task, meta.model]
        assert f" {meta.epochs} " in row and meta.source.rsplit("/", 1)[-1] in row and meta.paper in row


def test_cli_prints_a_recipe(capsys):
    assert main(["recipes", "seg-cityscapes-w48"]) == 0
    out = capsys.readouterr().out
    assert out == recipes.recipe_path("seg-cityscapes-w48").read_text()
    assert tomllib.loads(out)["model"]["name"] == "hrnet_w48_seg"


def test_cli_writes_a_copy_to_edit(tmp_path, capsys):
    dest = tmp_path / "mine.toml"
    assert main(["recipes", "cls-imagenet-w18", "--write", str(dest)]) == 0
    assert dest.read_text() == recipes.recipe_path("cls-imagenet-w18").read_text()
    assert str(dest) in capsys.readouterr().out
    # the user's edit is what a run then reads
    dest.write_text(dest.read_text().replace('root = "/path/to/imagenet"', f'root = "{tmp_path}"'))
    assert load_run_config(dest).data.root == str(tmp_path)
    # no overwrite without --force: one line, exit 2, the edit kept
    edited = dest.read_text()
    assert main(["recipes", "cls-imagenet-w48", "--write", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; --force replaces it" in err
    assert dest.read_text() == edited
    assert main(["recipes", "cls-imagenet-w48", "--write", str(dest), "--force"]) == 0
    assert load_run_config(dest).model == "hrnet_w48_cls"
    # a folder gets <name>.toml
    assert main(["recipes", "pose-coco-w32-256x192", "--write", str(tmp_path)]) == 0
    assert load_run_config(tmp_path / "pose-coco-w32-256x192.toml").model == "hrnet_w32_pose"


@pytest.mark.parametrize("argv, needle", [
    (["recipes", "pose-coco-w32"], "unknown recipe 'pose-coco-w32'. Did you mean"),
    (["recipes", "--write", "x.toml"], "need a recipe NAME"),
    (["recipes", "seg-cityscapes-w48", "--force"], "--force: only with --write"),
    (["recipes", "seg-cityscapes-w48", "--write", "x.json"], "give a path ending in .toml"),
    (["recipes", "seg-cityscapes-w48", "--write", "/nonexistent/dir/x.toml"], "does not exist"),
])
def test_cli_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith("hrnet-edge recipes: error:")
    if "unknown recipe" in needle:
        assert all(n in err for n in NAMES)  # the valid names are listed
