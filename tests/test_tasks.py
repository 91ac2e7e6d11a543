"""The Task interface: per-task configuration, recipes, losses, schedules, registry."""
from __future__ import annotations

import math

import pytest
import torch

from hrnet_edge.errors import ConfigError
from hrnet_edge.runconfig import load_run_config, run_config_from_dict
from hrnet_edge.tasks import get_task, registered_tasks
from hrnet_edge.tasks.base import EvalResult
from hrnet_edge.training.loop import lr_at


def test_registry_names_every_task_with_a_pipeline():
    assert registered_tasks() == ["cls", "det", "pose", "seg"]
    for name in registered_tasks():
        task = get_task(name)
        assert task.name == name and task.metric and set(task.thresholds) == {"fp32", "fp16", "bf16", "int8"}
    with pytest.raises(ConfigError, match="unknown task"):
        get_task("depth")


def test_sections_follow_the_models_task():
    seg = run_config_from_dict({"model": "hrnet_w8_seg"})
    assert type(seg.data).__name__ == "SegData" and seg.data.format == "cityscapes"
    assert seg.model_overrides == {"input_size": (128, 256)}
    assert seg.train.optimizer == "sgd" and seg.train.schedule == "poly"  # the quick recipe
    # a pose key in a segmentation run is a typo, not silently ignored
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sigma'\] in \[data\]; valid: .*format"):
        run_config_from_dict({"model": "hrnet_w8_seg", "data": {"sigma": 2.0}})
    with pytest.raises(ConfigError, match="decoder"):
        run_config_from_dict({"model": "hrnet_w8_pose", "eval": {"decoder": "argmax"}})
    with pytest.raises(ConfigError, match="format 'voc' is not known; valid: cityscapes, masks"):
        run_config_from_dict({"model": "hrnet_w8_seg", "data": {"format": "voc"}})


def test_recipes_and_user_values():
    paper = run_config_from_dict({"model": "hrnet_w8_seg", "recipe": "paper", "train": {"epochs": 3}})
    assert paper.train.epochs == 3 and paper.train.lr == 0.01 and paper.train.batch_size == 12
    cls = run_config_from_dict({"model": "hrnet_w8_cls", "recipe": "paper"})
    assert cls.train.schedule == "step" and cls.train.milestones == (30, 60, 90)
    # the task's QAT schedule, under what the file sets
    assert (cls.qat.epochs, cls.qat.lr) == (2, 1e-4)
    mine = run_config_from_dict({"model": "hrnet_w8_cls", "qat": {"lr": 3e-5}})
    assert (mine.qat.epochs, mine.qat.lr) == (2, 3e-5)
    # detection's quick recipe keeps NNCF's init (its one QAT epoch lowered every INT8 row);
    # a file's epochs bring the 30-step fine-tuning back
    det = run_config_from_dict({"model": "hrnet_w8_det"})
    assert (det.qat.epochs, det.qat.steps_per_epoch) == (0, 30)
    assert run_config_from_dict({"model": "hrnet_w8_det", "qat": {"epochs": 1}}).qat.epochs == 1
    assert run_config_from_dict({"model": "hrnet_w8_pose"}).qat.lr == 1e-5
    assert run_config_from_dict({"model": "hrnet_w8_pose"}).export.carry_qat_ranges is True
    assert not run_config_from_dict({"model": "hrnet_w8_pose", "export": {"carry_qat_ranges": False}}
                                    ).export.carry_qat_ranges
    with pytest.raises(ConfigError, match="qat"):
        run_config_from_dict({"model": "hrnet_w8_cls", "qat": {"lr_typo": 1}})
    with pytest.raises(ConfigError, match="unknown recipe 'fast' for task seg; valid: quick, paper"):
        run_config_from_dict({"model": "hrnet_w8_seg", "recipe": "fast"})
    with pytest.raises(ConfigError, match="schedule 'linear' is not known"):
        run_config_from_dict({"model": "hrnet_w8_seg", "train": {"schedule": "linear"}})
    # the stored config reads back to the same run
    assert run_config_from_dict(paper.to_dict()) == paper


def test_model_flag_replaces_the_files_model(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('model = "hrnet_w8_pose"\n[check]\niterations = 7\n')
    cfg = load_run_config(f, model="hrnet_w8_seg")
    assert cfg.model == "hrnet_w8_seg" and cfg.check.iterations == 7 and cfg.task.name == "seg"


def test_schedules():
    assert lr_at(0, 100, 0, 1.0, "poly") == 1.0
    assert lr_at(50, 100, 0, 1.0, "poly", poly_power=0.9) == pytest.approx(0.5**0.9)
    assert lr_at(99, 100, 0, 1.0, "step", milestones=(3, 6), steps_per_epoch=10) == pytest.approx(0.01)
    assert lr_at(29, 100, 0, 1.0, "step", milestones=(3, 6), steps_per_epoch=10) == 1.0
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)  # warm-up
    assert lr_at(100, 100, 0, 1.0) == pytest.approx(0.01)  # cosine ends at 1%
    assert math.isclose(lr_at(55, 100, 10, 2.0), 2.0 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5))))


def test_seg_loss_ignores_255_and_upsamples():
    cfg = run_config_from_dict({"model": "hrnet_w8_seg"})
    task = cfg.task
    logits = torch.zeros(1, 19, 4, 8)
    logits[:, 3] = 10.0  # every pixel says class 3
    labels = torch.full((1, 16, 32), 255, dtype=torch.long)
    labels[0, :8] = 3
    right = task.loss(logits, (None, labels), cfg)
    labels[0, 8:] = 5  # wrong where it was ignored before
    wrong = task.loss(logits, (None, labels), cfg)
    assert right.item() < 1e-3 and wrong.item() > 4


def test_cls_loss_uses_label_smoothing():
    plain = run_config_from_dict({"model": "hrnet_w8_cls", "train": {"label_smoothing": 0.0}})
    smooth = run_config_from_dict({"model": "hrnet_w8_cls", "train": {"label_smoothing": 0.2}})
    logits = torch.tensor([[8.0, 0.0, 0.0]])
    labels = torch.tensor([0])
    assert plain.task.loss(logits, (None, labels), plain) < smooth.task.loss(logits, (None, labels), smooth)


def test_agreements_count_matches():
    seg, cls = get_task("seg"), get_task("cls")
    a = EvalResult(metrics={}, decoded=torch.tensor([[0, 1], [2, 2]]).numpy())
    b = EvalResult(metrics={}, decoded=torch.tensor([[0, 1], [2, 3]]).numpy())
    assert seg.agreement(a, b, None) == 0.75
    assert cls.agreement(EvalResult({}, decoded=a.decoded[0]), EvalResult({}, decoded=b.decoded[1]), None) == 0.0


def test_failures_are_relative_to_the_outputs_range():
    task = get_task("seg")
    ok = {"rel_max_abs": 2e-4, "cosine": 1.0, "agreement": 1.0}
    assert task.failures("fp32", ok, 0.0) == []
    bad = task.failures("int8", {"rel_max_abs": 0.6, "cosine": 0.9, "agreement": 0.5}, 0.02)
    assert len(bad) == 4 and "pixel agreement 0.500 < 0.9" in bad[2] and "mIoU drop" in bad[3]
    # a drop of exactly the limit passes, whatever float subtraction leaves over
    cls = get_task("cls")
    assert cls.failures("int8", ok, 0.19 - 0.18) == []
    assert cls.failures("int8", ok, 0.19 - 0.17) == ["top-1 drop 0.0200 > 0.01"]
