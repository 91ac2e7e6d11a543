"""Issue 13's catalogue: bad input and file-system faults through the command line.

Each case is the exact command, the exit code, the start of its one error line, and
what must be unchanged on disk afterwards (a hash of every file and name under the run
directory and the data folder, before and after; ``logs/`` aside, which every command
appends to). Cases run in this process through ``hrnet_edge.cli.main`` and start from a
copy of one tiny finished run (``hardening_run`` in conftest), so none trains a model.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import HARDENING_TOML
from hrnet_edge.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


def tree_hash(path: Path, skip: tuple[str, ...] = ("logs",)) -> str:
    """sha256 over every name and file under ``path`` ('absent' when it does not exist)."""
    if not path.exists():
        return "absent"
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if rel.parts[0] in skip:
            continue
        h.update(str(rel).encode() + b"\0")
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@dataclass
class Ctx:
    tmp: Path
    base: dict
    run: Path
    data: Path
    cfg: Path
    subs: dict = field(default_factory=dict)

    def copy_run(self, stage: str = "checked") -> None:
        shutil.copytree(self.base[stage], self.run, symlinks=True)

    def config(self, text: str | bytes, name: str = "c.toml") -> None:
        self.cfg = self.tmp / name
        (self.cfg.write_bytes if isinstance(text, bytes) else self.cfg.write_text)(text)

    def fmt(self, text: str) -> str:
        return text.format(run=self.run, data=self.data, cfg=self.cfg, **self.subs)


@dataclass
class Case:
    id: str
    argv: list[str]
    first: str  # the error line after "hrnet-edge <command>: error: " starts with this
    setup: Callable[[Ctx], None] = lambda ctx: None
    rc: int = 2
    unchanged: tuple[str, ...] = ("run", "data")
    after: Callable[[Ctx], None] = lambda ctx: None


TRAIN = ["train", "--config", "{cfg}", "--run", "{run}", "--no-progress"]


def _toml(section: str, line: str) -> str:
    """HARDENING_TOML with ``line`` put first in ``[section]`` (a later duplicate key is
    not possible in TOML, so the key is removed from the section first)."""
    key = line.split("=")[0].strip()
    out, inside = [], section == ""
    for ln in HARDENING_TOML.splitlines():
        if ln.startswith("["):
            inside = ln.strip() == f"[{section}]"
        if inside and ln.split("=")[0].strip() == key:
            continue
        out.append(ln)
        if ln.strip() == f"[{section}]":
            out.append(line)
    text = "\n".join(out)
    if section == "":
        return f"{line}\n{text}"
    return text if f"[{section}]" in HARDENING_TOML else f"{text}\n[{section}]\n{line}\n"


def cfg_case(id_: str, section: str, line: str, first: str) -> Case:
    return Case(id_, TRAIN, first, setup=lambda ctx: ctx.config(_toml(section, line)))


CONFIG_CASES = [
    cfg_case("input-size-text", "model_overrides", 'input_size = "abc"',
             "[model] input_size must be a list of 2 integers, got 'abc' (str)"),
    cfg_case("input-size-one", "model_overrides", "input_size = [128]",
             "[model] input_size must be a list of 2 integers, got [128] (list)"),
    cfg_case("input-size-zero", "model_overrides", "input_size = [64, 0]",
             "input_size must be positive multiples of 32, got (64, 0)"),
    cfg_case("input-size-odd", "model_overrides", "input_size = [64, 50]",
             "input_size must be positive multiples of 32"),
    cfg_case("width-float", "model_overrides", "width = 8.5",
             "[model] width must be an integer, got 8.5 (float)"),
    cfg_case("width-text", "model_overrides", 'width = "8"', "[model] width must be an integer, got '8' (str)"),
    cfg_case("width-zero", "model_overrides", "width = 0", "width, stem_channels and stage1_planes must be >= 1"),
    cfg_case("override-typo", "model_overrides", "widht = 8", "unknown override key(s) ['widht']"),
    cfg_case("std-zero", "model_overrides", "std = [0.2, 0.0, 0.2]", "[model] std must be > 0 (each)"),
    cfg_case("epochs-text", "train", 'epochs = "three"', "[train] epochs must be an integer, got 'three' (str)"),
    cfg_case("epochs-zero", "train", "epochs = 0", "[train] epochs must be >= 1, got 0"),
    cfg_case("epochs-float", "train", "epochs = 2.5", "[train] epochs must be an integer, got 2.5"),
    cfg_case("batch-zero", "train", "batch_size = 0", "[train] batch_size must be >= 1, got 0"),
    cfg_case("batch-bool", "train", "batch_size = true", "[train] batch_size must be an integer, got True"),
    cfg_case("lr-negative", "train", "lr = -1.0", "[train] lr must be > 0, got -1.0"),
    cfg_case("lr-nan", "train", "lr = nan", "[train] lr must be a finite number, got nan"),
    cfg_case("lr-inf", "train", "lr = inf", "[train] lr must be a finite number, got inf"),
    cfg_case("milestones-zero", "train", "milestones = [0]", "[train] milestones must be >= 1 (each), got [0]"),
    cfg_case("milestones-text", "train", 'milestones = ["a"]', "[train] milestones must be a list of integers"),
    cfg_case("momentum-high", "train", "momentum = 1.5", "[train] momentum must be in [0, 1), got 1.5"),
    cfg_case("smoothing-one", "train", "label_smoothing = 1.0", "[train] label_smoothing must be in [0, 1), got 1.0"),
    cfg_case("optimizer", "train", 'optimizer = "adam"', "[train] optimizer 'adam' is not known; valid: adamw, sgd"),
    cfg_case("schedule", "train", 'schedule = "linear"', "[train] schedule 'linear' is not known"),
    cfg_case("val-every-zero", "train", "val_every = 0", "[train] val_every must be >= 1, got 0"),
    cfg_case("processes-zero", "train", "processes = 0", "[train] processes must be >= 1, got 0"),
    cfg_case("train-key-typo", "train", "epoch = 3", "unknown key(s) ['epoch'] in [train]"),
    cfg_case("qat-epochs-negative", "qat", "epochs = -1", "[qat] epochs must be >= 0, got -1"),
    cfg_case("qat-lr-zero", "qat", "lr = 0.0", "[qat] lr must be > 0, got 0.0"),
    cfg_case("qat-calibration-text", "qat", 'calibration_images = "many"', "[qat] calibration_images must be an integer"),
    cfg_case("qat-steps-negative", "qat", "steps_per_epoch = -3", "[qat] steps_per_epoch must be >= 0, got -3"),
    cfg_case("qat-bias-correction-text", "qat", 'bias_correction = "no"', "[qat] bias_correction must be true or false"),
    cfg_case("check-threads-zero", "check", "threads = 0", "[check] threads must be >= 1, got 0"),
    cfg_case("check-iterations-zero", "check", "iterations = 0", "[check] iterations must be >= 1, got 0"),
    cfg_case("check-eval-images-zero", "check", "eval_images = 0", "[check] eval_images must be >= 1, got 0"),
    cfg_case("data-val-zero", "data", "synthetic_val_images = 0", "[data] synthetic_val_images must be >= 1, got 0"),
    cfg_case("data-workers-negative", "data", "workers = -1", "[data] workers must be >= 0, got -1"),
    cfg_case("data-sigma-zero", "data", "sigma = 0.0", "[data] sigma must be > 0, got 0.0"),
    cfg_case("data-flip-text", "data", 'flip = "yes"', "[data] flip must be true or false, got 'yes' (str)"),
    cfg_case("data-size-one", "data", "synthetic_image_size = [96]", "[data] synthetic_image_size must be a list of 2"),
    cfg_case("eval-decoder", "eval", 'decoder = "argmax"', "[eval] decoder 'argmax' is not known; valid: dark, quarter"),
    cfg_case("export-target-typo", "export", 'targets = ["onxx"]', "unknown target 'onxx'. Did you mean 'onnx'?"),
    cfg_case("export-precision-unknown", "export", 'precisions = ["fp8"]', "unknown precision 'fp8'."),
    cfg_case("export-precision-not-offered", "export", 'precisions = ["bf16"]',
             "precision 'bf16' is not exported by the target(s) named (onnx: fp32, int8, int8u8)"),
    cfg_case("export-upsample", "export", 'upsample_form = "pixelshuffle"',
             "[export] upsample_form 'pixelshuffle' is not known"),
    cfg_case("export-parallel-text", "export", 'parallel = "no"', "[export] parallel must be true or false"),
    cfg_case("model-typo", "", 'model = "hrnet_w8_psoe"', "unknown model 'hrnet_w8_psoe'. Did you mean"),
    cfg_case("model-number", "", "model = 5", "[top level] model must be text, got 5 (int)"),
    cfg_case("recipe-unknown", "", 'recipe = "fast"', "unknown recipe 'fast' for task pose; valid: quick, paper"),
    cfg_case("top-key-typo", "", 'modle = "x"', "unknown key(s) ['modle'] in [top level]"),
    Case("section-not-table", TRAIN, "[train] must be a table/object, got int",
         setup=lambda ctx: ctx.config('model = "hrnet_w8_pose"\ntrain = 3\n')),
    Case("overrides-not-table", TRAIN, "[top level] model_overrides must be a table/object",
         setup=lambda ctx: ctx.config('model = "hrnet_w8_pose"\nmodel_overrides = "big"\n')),
    Case("json-list", TRAIN, "a run configuration is a table/object, got list",
         setup=lambda ctx: ctx.config("[1, 2]", "c.json")),
    Case("binary-config", TRAIN, "cannot parse {cfg}",
         setup=lambda ctx: ctx.config(b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "c.json")),
    Case("toml-syntax", TRAIN, "cannot parse {cfg}", setup=lambda ctx: ctx.config("[train\nepochs = 1\n")),
    Case("config-missing", ["train", "--config", "{run}/../nope.toml", "--run", "{run}"],
         "config file '{run}/../nope.toml' does not exist"),
    Case("bad-config-on-finished-run", TRAIN, "[train] epochs must be >= 1, got 0",
         setup=lambda ctx: (ctx.copy_run(), ctx.config(_toml("train", "epochs = 0")))),
    Case("other-config-on-finished-run", TRAIN, "{run} already holds a run with a different configuration",
         setup=lambda ctx: (ctx.copy_run(), ctx.config(_toml("train", "lr = 0.5")))),
    Case("model-flag-typo", ["train", "--model", "hrnet_w8_psoe", "--run", "{run}"],
         "unknown model 'hrnet_w8_psoe'. Did you mean"),
]


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def _truncate(path: Path, keep: int = 40) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _unfinished(ctx: Ctx) -> None:
    """The finished run's checkpoints under a configuration asking for 3 epochs."""
    ctx.copy_run()
    cfg = json.loads((ctx.run / "config.json").read_text())
    cfg["train"]["epochs"] = 3
    _write_json(ctx.run / "config.json", cfg)


def _run_file(ctx: Ctx) -> None:
    ctx.run.write_text("not a folder")


def _read_only(ctx: Ctx) -> None:
    ctx.copy_run("trained")
    import tempfile

    real = tempfile.mkstemp

    def refuse(*a, **k):  # what a read-only mount answers to any new file
        if str(k.get("dir", "")).startswith(str(ctx.run)):
            raise OSError(30, "Read-only file system")
        return real(*a, **k)

    ctx.subs["patch"] = (tempfile, "mkstemp", refuse)


RUN_CASES = [
    Case("run-is-file-train", TRAIN, "run directory {run} is a file, not a directory",
         setup=lambda ctx: (_run_file(ctx), ctx.config(HARDENING_TOML))),
    Case("run-is-file-check", ["check", "--run", "{run}"], "run directory {run} is a file, not a directory",
         setup=_run_file),
    Case("run-is-file-report", ["report", "--run", "{run}"], "run directory {run} is a file", setup=_run_file),
    Case("run-below-file", ["train", "--config", "{cfg}", "--run", "{run}/sub"],
         "run directory {run}/sub cannot be created: {run} is a file",
         setup=lambda ctx: (_run_file(ctx), ctx.config(HARDENING_TOML))),
    Case("run-under-proc", ["train", "--config", "{cfg}", "--run", "/proc/hrnet-edge-run"],
         "run directory /proc/hrnet-edge-run is not writable", setup=lambda ctx: ctx.config(HARDENING_TOML)),
    Case("run-under-sys", ["train", "--config", "{cfg}", "--run", "/sys/hrnet-edge-run"],
         "run directory /sys/hrnet-edge-run is not writable", setup=lambda ctx: ctx.config(HARDENING_TOML)),
    Case("read-only-qat", ["qat", "--run", "{run}", "--force"], "run directory {run} is not writable",
         setup=_read_only),
    Case("no-run-check", ["check", "--run", "{run}"], "{run} is not a run directory (no config.json)"),
    Case("no-run-qat", ["qat", "--run", "{run}"], "{run} is not a run directory (no config.json)"),
    Case("config-truncated", ["check", "--run", "{run}"], "{run}/config.json is damaged (not valid JSON",
         setup=lambda ctx: (ctx.copy_run(), _truncate(ctx.run / "config.json"))),
    Case("config-binary", ["export", "--run", "{run}"], "{run}/config.json is damaged (not valid JSON",
         setup=lambda ctx: (ctx.copy_run(), (ctx.run / "config.json").write_bytes(b"\xff\xfe\x00\x81"))),
    Case("config-list", ["qat", "--run", "{run}"], "{run}/config.json is not a valid run configuration",
         setup=lambda ctx: (ctx.copy_run(), _write_json(ctx.run / "config.json", [1, 2]))),
    Case("config-bad-value", ["export", "--run", "{run}"],
         "{run}/config.json is not a valid run configuration ([train] batch_size must be >= 1",
         setup=lambda ctx: (ctx.copy_run(), _write_json(ctx.run / "config.json", {
             **json.loads((ctx.run / "config.json").read_text()), "train": {"batch_size": 0}}))),
    Case("index-truncated", ["check", "--run", "{run}"], "{run}/exports/index.json is damaged",
         setup=lambda ctx: (ctx.copy_run(), _truncate(ctx.run / "exports" / "index.json"))),
    Case("index-truncated-export", ["export", "--run", "{run}", "--force"], "{run}/exports/index.json is damaged",
         setup=lambda ctx: (ctx.copy_run(), _truncate(ctx.run / "exports" / "index.json"))),
    Case("qat-metrics-truncated", ["qat", "--run", "{run}"], "{run}/qat/metrics.json is damaged",
         setup=lambda ctx: (ctx.copy_run(), _truncate(ctx.run / "qat" / "metrics.json"))),
    Case("export-untrained", ["export", "--run", "{run}"], "{run} has no trained checkpoint (best.safetensors)",
         setup=lambda ctx: (ctx.copy_run(), shutil.rmtree(ctx.run / "checkpoints"))),
    Case("qat-untrained", ["qat", "--run", "{run}"], "{run} has no trained checkpoint",
         setup=lambda ctx: (ctx.copy_run(), shutil.rmtree(ctx.run / "checkpoints"))),
    Case("qat-unfinished", ["qat", "--run", "{run}", "--force"],
         "training of {run} is unfinished (epoch 2 of 3); run 'hrnet-edge train --run {run}' to finish it",
         setup=_unfinished),
    Case("export-unfinished", ["export", "--run", "{run}"], "training of {run} is unfinished (epoch 2 of 3)",
         setup=_unfinished),
    Case("check-unfinished", ["check", "--run", "{run}"], "training of {run} is unfinished (epoch 2 of 3)",
         setup=_unfinished),
    Case("best-corrupt", ["export", "--run", "{run}"], "checkpoint {run}/checkpoints/best.safetensors is not a valid",
         setup=lambda ctx: (ctx.copy_run(), _truncate(ctx.run / "checkpoints" / "best.safetensors"))),
    Case("last-corrupt", ["qat", "--run", "{run}"], "checkpoint {run}/checkpoints/last.safetensors is not a valid",
         setup=lambda ctx: (ctx.copy_run(), _truncate(ctx.run / "checkpoints" / "last.safetensors"))),
    Case("export-flag-target-typo", ["export", "--run", "{run}", "--targets", "onxx"], "unknown target 'onxx'.",
         setup=lambda ctx: ctx.copy_run()),
    Case("export-precision-typo", ["export", "--run", "{run}", "--precisions", "int9"], "unknown precision 'int9'.",
         setup=lambda ctx: ctx.copy_run()),
    Case("export-flag-precision-not-offered", ["export", "--run", "{run}", "--targets", "onnx", "--precisions", "fp16"],
         "precision 'fp16' is not exported by the target(s) named (onnx: fp32, int8, int8u8)",
         setup=lambda ctx: ctx.copy_run()),
    Case("report-flag-without-add", ["report", "--run", "{run}", "--label", "phone"],
         "--label: only with --add FILE", setup=lambda ctx: ctx.copy_run()),
    Case("artifact-truncated", ["check", "--run", "{run}"], "", rc=1, unchanged=("data",),
         setup=lambda ctx: (ctx.copy_run(), _truncate(ctx.run / "exports" / "onnx-fp32" / "model.onnx", 500)),
         after=lambda ctx: _assert_integrity_row(ctx)),
]


def _assert_integrity_row(ctx: Ctx) -> None:
    """A truncated artifact is a failed row at once, never the old 'passed'."""
    row = json.loads((ctx.run / "checks" / "onnx-fp32.json").read_text())
    assert row["status"] == "failed" and row["reason"].startswith(
        "artifact integrity: model.onnx does not match the sha256 in metadata.json"), row
    report = json.loads((ctx.run / "report.json").read_text())
    assert [r["status"] for r in report["rows"] if r["target"] == "onnx" and r["precision"] == "fp32"] == ["failed"]


# --- data: a copy of the run's synthetic data as the user's [data] root --------------
TRAIN_ANN = "annotations/person_keypoints_train2017.json"
VAL_ANN = "annotations/person_keypoints_val2017.json"


def data_case(id_: str, mutate: Callable[[Path, dict], None], first: str) -> Case:
    def setup(ctx: Ctx) -> None:
        shutil.copytree(ctx.base["checked"] / "data", ctx.data)
        ctx.subs["ann"] = ctx.data / TRAIN_ANN
        ctx.subs["val"] = ctx.data / VAL_ANN
        ann = json.loads((ctx.data / TRAIN_ANN).read_text())
        ctx.subs["id"] = ann["annotations"][0]["id"]
        ctx.subs["image"] = ann["images"][0]["id"]
        mutate(ctx.data, ctx.subs)
        ctx.config(_toml("data", f'root = "{ctx.data}"'))
    return Case(id_, TRAIN, first, setup=setup)


def _edit(rel: str, fn: Callable[[dict], None]) -> Callable[[Path, dict], None]:
    def mutate(data: Path, subs: dict) -> None:
        doc = json.loads((data / rel).read_text())
        fn(doc)
        (data / rel).write_text(json.dumps(doc))  # NaN is written as NaN, as Python's json does
    return mutate


def _first_ann(key: str, value) -> Callable[[dict], None]:
    return lambda doc: doc["annotations"][0].__setitem__(key, value)


def _first_image(key: str, value) -> Callable[[dict], None]:
    return lambda doc: doc["images"][0].__setitem__(key, value)


def _all_val(fn: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda doc: [fn(a) for a in doc["annotations"]]


def _kps_off_image(a: dict) -> None:
    a["keypoints"] = [v if i % 3 == 2 else 5000.0 for i, v in enumerate(a["keypoints"])]


def _kps_unlabelled(a: dict) -> None:
    a["keypoints"] = [0 if i % 3 == 2 else v for i, v in enumerate(a["keypoints"])]
    a["num_keypoints"] = 0


IMG = "images/train2017/000000000001.jpg"
DATA_CASES = [
    data_case("image-truncated", lambda d, s: _truncate(d / IMG, 300),
              "image {data}/" + IMG + " cannot be decoded"),
    data_case("image-not-image", lambda d, s: (d / IMG).write_text("hello"),
              "image {data}/" + IMG + " cannot be decoded"),
    data_case("image-missing", lambda d, s: (d / IMG).unlink(),
              "1 image file(s) referenced by {ann} are missing"),
    data_case("file-name-dotdot", _edit(TRAIN_ANN, _first_image("file_name", "../../../etc/passwd")),
              "{ann}: image {image} has file_name '../../../etc/passwd', which is absolute or leaves the image folder"),
    data_case("file-name-absolute", _edit(TRAIN_ANN, _first_image("file_name", "/etc/passwd")),
              "{ann}: image {image} has file_name '/etc/passwd', which is absolute"),
    data_case("file-name-empty", _edit(TRAIN_ANN, _first_image("file_name", "")),
              "{ann}: image {image} has file_name ''; valid: a non-empty path"),
    data_case("bbox-nan", _edit(TRAIN_ANN, _first_ann("bbox", [1.0, float("nan"), 10.0, 10.0])),
              "{ann}: annotation {id} bbox must be [x, y, w, h], 4 finite numbers, got [1.0, nan"),
    data_case("bbox-text", _edit(TRAIN_ANN, _first_ann("bbox", ["a", 1, 2, 3])),
              "{ann}: annotation {id} bbox must be [x, y, w, h], 4 finite numbers"),
    data_case("bbox-short", _edit(TRAIN_ANN, _first_ann("bbox", [1, 2, 3])),
              "{ann}: annotation {id} bbox must be [x, y, w, h]"),
    data_case("keypoints-nan", _edit(TRAIN_ANN, lambda doc: doc["annotations"][0]["keypoints"].__setitem__(
        0, float("nan"))), "{ann}: annotation {id} has keypoints [nan"),
    data_case("keypoints-text", _edit(TRAIN_ANN, lambda doc: doc["annotations"][0]["keypoints"].__setitem__(
        1, "12")), "{ann}: annotation {id} has keypoints"),
    data_case("keypoints-null", _edit(TRAIN_ANN, _first_ann("keypoints", None)),
              "{ann}: annotation {id} has keypoints None"),
    data_case("keypoints-short", _edit(TRAIN_ANN, _first_ann("keypoints", [1.0, 2.0, 2])),
              "{ann}: annotation {id} has 3 keypoint values, expected 51"),
    data_case("visibility-3", _edit(TRAIN_ANN, lambda doc: doc["annotations"][0]["keypoints"].__setitem__(2, 3)),
              "{ann}: annotation {id} has keypoint visibilities [3,"),
    data_case("annotation-lacks-bbox", _edit(TRAIN_ANN, lambda doc: doc["annotations"][0].pop("bbox")),
              "{ann}: annotation {id} lacks ['bbox']"),
    data_case("unknown-image", _edit(TRAIN_ANN, _first_ann("image_id", 999)),
              "{ann}: annotation {id} refers to image 999, which is not in 'images'"),
    data_case("val-empty-unlabelled", _edit(VAL_ANN, _all_val(_kps_unlabelled)),
              "the validation split {val} has no usable item (dropped: 7 no labelled keypoint)"),
    data_case("val-keypoints-off-image", _edit(VAL_ANN, _all_val(_kps_off_image)),
              "the validation split {val} has no usable item (dropped: 7 every labelled keypoint outside"),
    data_case("val-no-annotations", _edit(VAL_ANN, lambda doc: doc.__setitem__("annotations", [])),
              "the validation split {val} has no usable item (dropped: nothing)"),
    data_case("val-annotation-file-missing", lambda d, s: (d / VAL_ANN).unlink(),
              "annotation file {val} is missing"),
    data_case("annotation-file-not-json", lambda d, s: (d / TRAIN_ANN).write_text("{truncated"),
              "annotation file {ann} is not valid JSON"),
    data_case("annotations-not-list", _edit(TRAIN_ANN, lambda doc: doc.__setitem__("annotations", {})),
              "annotation file {ann} lacks the list 'annotations'"),
    Case("data-root-missing", TRAIN, "data root {data} does not exist",
         setup=lambda ctx: ctx.config(_toml("data", f'root = "{ctx.data}"'))),
]

CASES = CONFIG_CASES + RUN_CASES + DATA_CASES


def test_the_catalogue_holds_at_least_60_distinct_cases():
    ids = [c.id for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids), len(ids)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, hardening_run, tmp_path, capsys, monkeypatch):
    ctx = Ctx(tmp=tmp_path, base=hardening_run, run=tmp_path / "run", data=tmp_path / "data",
              cfg=tmp_path / "c.toml")
    case.setup(ctx)
    if "patch" in ctx.subs:
        monkeypatch.setattr(*ctx.subs.pop("patch"))
    argv = [ctx.fmt(a) for a in case.argv]
    before = {"run": tree_hash(ctx.run), "data": tree_hash(ctx.data)}
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == case.rc, (argv, rc, err)
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith(f"hrnet-edge {argv[0]}: error: ")]
    if case.rc == 2:
        assert len(errors) == 1, err
        message = errors[0].split(": error: ", 1)[1]
        assert message.startswith(ctx.fmt(case.first)), (message, ctx.fmt(case.first))
    else:
        assert not errors, err
    after = {"run": tree_hash(ctx.run), "data": tree_hash(ctx.data)}
    for what in case.unchanged:
        if what == "run" and before["run"] == "absent":
            # a refused configuration creates nothing, or at most an empty run with no result
            assert after["run"] == "absent" or not (ctx.run / "checkpoints").exists(), what
            if case in CONFIG_CASES:
                assert after["run"] == "absent", "a bad configuration was written into the run directory"
            continue
        assert after[what] == before[what], f"{what} changed"
    case.after(ctx)


def test_a_corrected_config_is_taken_by_a_run_that_failed_on_its_data(hardening_run, tmp_path, capsys):
    """The failed data case leaves config.json (no checkpoint); the fixed configuration
    is then accepted, not refused as 'different' (it used to be)."""
    data = tmp_path / "data"
    shutil.copytree(hardening_run["checked"] / "data", data)
    (data / IMG).write_text("not an image")
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml("data", f'root = "{data}"'))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--run", str(run)]) == 2
    cfg.write_text(_toml("data", f'root = "{data}"').replace("epochs = 2", "epochs = 1"))
    shutil.copy(hardening_run["checked"] / "data" / IMG, data / IMG)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--run", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "data checked: training 25 items from 16 images, dropped 1 no labelled keypoint" in out
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 1


def test_report_table_survives_multi_line_errors():
    from converters.report import render_markdown

    rows = [{"target": "onnx", "precision": "fp32", "status": "error",
             "reason": "ExportError: first line\nTraceback (most recent call last):\n  File \"x\" | y"},
            {"target": "tflite", "precision": "int8", "status": "failed\nsecond", "reason": "a|b"}]
    report = {"model": "m", "machine": {}, "metric_label": "AP", "metric": "AP", "eval_note": "n",
              "input_size": [64, 64], "agreement_label": "agreement", "rows": rows, "summary": {}}
    table = [ln for ln in render_markdown(report).splitlines() if ln.startswith("| ")]
    body = table[1:]
    assert len(body) == 2  # the header row, then one line per row
    width = table[0].count("|")
    assert all(ln.count("|") == width for ln in body), body
    assert "first line Traceback (most recent call last): File \"x\" / y" in body[0]


def test_a_failed_reference_is_named_not_a_key_error(hardening_run, tmp_path):
    """A reference whose check failed (e.g. a corrupt checkpoint) used to turn every
    artifact row into "KeyError: 'metric'"."""
    from hrnet_edge.errors import RunDirError
    from hrnet_edge.pipeline.references import CheckContext
    from hrnet_edge.runs import open_run

    shutil.copytree(hardening_run["checked"], tmp_path / "run")
    run, cfg = open_run(tmp_path / "run")
    _write_json(run.check_path("pytorch", "fp32"), {
        "target": "pytorch", "precision": "fp32", "status": "error",
        "reason": "CheckpointError: checkpoint best.safetensors is not a valid safetensors file:\nheader"})
    ctx = CheckContext(run=run, cfg=cfg, task=cfg.task, val_ds=None)
    with pytest.raises(RunDirError, match=r"reference pytorch-fp32 could not be checked \(CheckpointError: "
                                          r"checkpoint best.safetensors is not a valid safetensors file: header\)"):
        ctx.reference_eval("fp32")
