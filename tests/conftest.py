"""Shared test fixtures: drawn figure-like scenes and small, settled pose models.

Export parity is checked on images that look like what the models see (a person-like
figure over a background), not only on uniform noise: noise keeps every activation
in a narrow band and hides quantization and layout errors that real scenes expose.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

# The package sets its OpenMP waiting (GOMP_SPINCOUNT) and the venv's extension folder
# when it is imported, before torch loads: import it first, as the CLI does, so the
# tests run what users run.
import hrnet_edge  # noqa: F401

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

EXPORT_INPUT_SIZE = (128, 96)


def draw_scenes(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``n`` figure-like scenes: a two-colour gradient background, some clutter, a
    figure made of an ellipse head and torso and thick limbs at random poses.

    Returns:
        NCHW float32 RGB in 0..1 (the models' input contract).
    """
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, h)[:, None, None] * rng.uniform(0.5, 1.0) + \
            np.linspace(0, 1, w)[None, :, None] * rng.uniform(0.0, 0.5)
        img = np.ascontiguousarray((c0 * (1 - t / t.max()) + c1 * t / t.max()).astype(np.uint8))
        for _ in range(int(rng.integers(2, 5))):  # clutter: boxes in the background
            p = rng.integers(0, [w, h])
            q = p + rng.integers(4, [w // 3 + 5, h // 3 + 5])
            cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in q),
                          tuple(int(c) for c in rng.uniform(0, 255, 3)), -1)
        _draw_figure(img, rng)
        img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        out[i] = img.transpose(2, 0, 1) / 255.0
    return out


def _draw_figure(img: np.ndarray, rng: np.random.Generator) -> None:
    import cv2

    h, w = img.shape[:2]
    color = tuple(int(c) for c in rng.uniform(0, 255, 3))
    thick = max(2, w // 14)
    cx, neck = int(rng.uniform(0.35, 0.65) * w), int(rng.uniform(0.22, 0.32) * h)
    hip = neck + int(0.3 * h)
    cv2.ellipse(img, (cx, neck - h // 12), (w // 12, h // 14), 0, 0, 360, color, -1)
    cv2.ellipse(img, (cx, (neck + hip) // 2), (w // 9, (hip - neck) // 2), 0, 0, 360, color, -1)
    for side in (-1, 1):
        elbow = (cx + side * int(rng.uniform(0.12, 0.25) * w), neck + int(rng.uniform(0.05, 0.2) * h))
        hand = (elbow[0] + side * int(rng.uniform(0.0, 0.15) * w), elbow[1] + int(rng.uniform(-0.15, 0.15) * h))
        knee = (cx + side * int(rng.uniform(0.03, 0.15) * w), hip + int(0.2 * h))
        foot = (knee[0] + side * int(rng.uniform(0.0, 0.1) * w), min(h - 2, knee[1] + int(0.2 * h)))
        for a, b in ((( cx, neck), elbow), (elbow, hand), ((cx, hip), knee), (knee, foot)):
            cv2.line(img, a, b, color, thick)


@pytest.fixture(scope="session")
def scene_images():
    """Factory: ``scene_images(n, size=(128, 96), seed=0)`` -> NCHW float32 in 0..1."""
    pytest.importorskip("cv2", reason="opencv is not installed")

    def make(n: int, size: tuple[int, int] = EXPORT_INPUT_SIZE, seed: int = 0) -> np.ndarray:
        return draw_scenes(n, size, seed)

    return make


def settle_pose_model(input_size: tuple[int, int] = EXPORT_INPUT_SIZE, seed: int = 0) -> torch.nn.Module:
    """``hrnet_w8_pose`` with BatchNorm statistics taken from drawn scenes and a head
    with structured output: a fresh net's identity BN statistics and near-zero head
    give activation ranges and heatmaps unlike a trained model's."""
    from hrnet_edge import create_model

    torch.manual_seed(seed)
    model = create_model("hrnet_w8_pose", input_size=input_size)
    torch.nn.init.normal_(model.head.final.weight, std=0.05)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the settling batch
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(draw_scenes(16, input_size, seed=1000 + seed)))
    return model.eval()


@pytest.fixture(scope="session")
def settled_pose_model() -> torch.nn.Module:
    """A settled ``hrnet_w8_pose`` at 128x96 (see :func:`settle_pose_model`); do not mutate."""
    pytest.importorskip("cv2", reason="opencv is not installed")
    return settle_pose_model()


@pytest.fixture(scope="session")
def nncf_pose_model(settled_pose_model):
    """An NNCF-quantized copy of ``settled_pose_model`` (post-training on 8 drawn
    scenes), standing in for the QAT model: the export routes are the same. Bias
    correction is off to keep the fixture quick (NNCF's statistics pass is slow)."""
    nncf = pytest.importorskip("nncf", reason="nncf is not installed (extra 'qat')")
    samples = [torch.from_numpy(x[None]) for x in draw_scenes(8, EXPORT_INPUT_SIZE, seed=2000)]
    qm = nncf.quantize(copy.deepcopy(settled_pose_model), nncf.Dataset(samples),
                       subset_size=len(samples),
                       advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True))
    return qm.eval()


def heatmap_parity(out: np.ndarray, ref: np.ndarray, tol_px: int = 1) -> dict[str, float]:
    """Compare two (N, K, h, w) heatmap batches.

    Returns:
        max_abs; rel (max_abs over the reference's largest magnitude); corr, the
        Pearson correlation of all values; argmax_agreement, the share of (image,
        keypoint) pairs whose argmax lies within ``tol_px`` heatmap pixels (Chebyshev)
        of the reference's.
    """
    assert out.shape == ref.shape, (out.shape, ref.shape)
    max_abs = float(np.abs(out - ref).max())
    n, k, h, w = ref.shape
    a = out.reshape(n, k, -1).argmax(-1)
    b = ref.reshape(n, k, -1).argmax(-1)
    dist = np.maximum(np.abs(a // w - b // w), np.abs(a % w - b % w))
    return {"max_abs": max_abs, "rel": max_abs / float(np.abs(ref).max()),
            "corr": float(np.corrcoef(out.ravel(), ref.ravel())[0, 1]),
            "argmax_agreement": float((dist <= tol_px).mean())}


@pytest.fixture(scope="session")
def parity():
    """The :func:`heatmap_parity` helper, for test modules."""
    return heatmap_parity


# The start of a subprocess script that proves code runs without some packages: the
# top-level names in BLOCKED (filled in with str.format, like the rest of the script)
# raise ImportError. Test modules append their own body.
IMPORT_BLOCKER = """import importlib.abc, sys
BLOCKED = {blocked!r}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked in this test: {{name}}")
        return None


sys.meta_path.insert(0, Block())
"""


# --- a tiny finished run for the hardening tests (issue 13) ------------------------------
# hrnet_w8_pose at 64x64 on 16 + 4 synthetic images, 2 epochs (so a resume is possible),
# one QAT epoch, ONNX fp32 + int8 only, checks with 2 timed runs: about 35 s on 2 cores.
HARDENING_TOML = """
model = "hrnet_w8_pose"
[model_overrides]
input_size = [64, 64]
[data]
synthetic_train_images = 16
synthetic_val_images = 4
synthetic_image_size = [96, 96]
workers = 0
[train]
epochs = 2
batch_size = 8
[qat]
calibration_images = 4
epochs = 1
batch_size = 8
[export]
calibration_images = 4
targets = ["onnx"]
parallel = false
[check]
warmup = 1
iterations = 2
parity_images = 4
natural_images = 0
"""


@pytest.fixture(scope="session")
def hardening_run(tmp_path_factory):
    """The tiny run of HARDENING_TOML, every stage done once; also a copy of the run
    directory after each stage (``trained``, ``qat``, ``exported``, ``checked``) and
    each stage's exit status. Shared: copy a folder before changing anything in it."""
    import shutil

    from hrnet_edge.cli import main

    root = tmp_path_factory.mktemp("hardening")
    cfg = root / "tiny.toml"
    cfg.write_text(HARDENING_TOML)
    work = root / "work"
    stages = {"trained": ["train", "--config", str(cfg)], "qat": ["qat"], "exported": ["export"],
              "checked": ["check"]}
    out = {"config": cfg, "rc": {}}
    for name, argv in stages.items():
        out["rc"][name] = main([*argv, "--run", str(work), "--no-progress"])
        assert out["rc"][name] in (0, 1), (name, out["rc"][name])
        out[name] = root / name
        shutil.copytree(work, out[name], symlinks=True)
    return out


# --- the tiny pose pipeline run (tests/test_pipeline.py; the web app test reuses its ONNX) --
# Small, but trained enough that heatmaps have peaks (OKS AP ~0.19 after 5 epochs of
# 400 images): on an untrained net the peaks are flat and keypoint agreement between
# float and INT8 is not something INT8 can promise, so the rows would not mean much.
TINY_POSE = """
model = "hrnet_w8_pose"
[model_overrides]
input_size = [128, 96]
[data]
synthetic_train_images = 400
synthetic_val_images = 24
synthetic_image_size = [192, 192]
workers = 0
[train]
epochs = 5
batch_size = 16
[qat]
calibration_images = 16
epochs = 1
batch_size = 16
[export]
calibration_images = 8
[check]
warmup = 2
iterations = 5
"""


@pytest.fixture(scope="session")
def pose_pipeline_run(tmp_path_factory):
    """``(run_dir, exit status)`` of ``hrnet-edge pipeline`` on TINY_POSE. Shared by the
    modules that need a trained pose model and its artifacts: add to it, never change
    what is there."""
    from hrnet_edge.cli import main

    root = tmp_path_factory.mktemp("pipe")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY_POSE)
    run = root / "run"
    rc = main(["pipeline", "--config", str(cfg), "--run", str(run), "--no-progress"])
    return run, rc


# --- what the tests of apps/ need beyond .venv (scripts/setup_apps.sh) -------------------
# The README's test command sets HRNET_EDGE_REQUIRE_BROWSER=1: then a missing piece fails
# the test instead of skipping it.
APPS_REQUIRED = os.environ.get("HRNET_EDGE_REQUIRE_BROWSER") == "1"
WEB_DIR = Path(__file__).resolve().parents[1] / "apps" / "web"


def need_for_apps(ok: bool, why: str) -> None:
    """Skip (or fail, under the README's test command) when ``ok`` is false."""
    if not ok:
        (pytest.fail if APPS_REQUIRED else pytest.skip)(why)


@pytest.fixture(scope="session")
def node_exe() -> str:
    import shutil

    exe = shutil.which("node")
    need_for_apps(exe is not None, "node is not installed")
    return exe


def run_page_code(node: str, job: dict):
    """apps/web/test/decode.mjs on a JSON job: the page's code without a browser."""
    import json
    import subprocess

    return subprocess.run([node, str(WEB_DIR / "test" / "decode.mjs")], input=json.dumps(job), text=True,
                          capture_output=True, timeout=120)


def runner_exit2(capsys, argv) -> str:
    """hrnet-edge-run with ``argv`` must exit 2 with one line on stderr; returns it."""
    from hrnet_edge_runtime.cli import main as run_cli

    with pytest.raises(SystemExit) as exc:
        run_cli(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


# --- two test processes (scripts/test.sh: pytest -n 2 --dist loadgroup) -------------------
# Each worker runs torch on one thread: two workers then fill the two cores without
# OpenMP threads of one waiting for cores the other holds.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# How tests are grouped between the workers. A group runs whole in one worker, so what it
# makes once (a module's fixtures, a session run) is made once:
# * every module that uses a session run below is in that run's group;
# * a module naming XDIST_SPLIT_BY (a module-scoped parametrized fixture) is one group
#   per parameter value, taken from the test id;
# * any other module is a group of its own.
# The groups come from the test ids and the modules' text, because xdist's own
# ``xdist_group`` marks no longer reach its scheduler under pytest 9 (xdist 3.8 renames
# ``item._nodeid``, which pytest 9 no longer reads).
SHARED_RUNS = {"hardening_run": "hardening-run", "pose_pipeline_run": "pose-pipeline-run"}
# The longest groups go first (scripts/test.sh keeps this order: --no-loadscope-reorder),
# so that the two workers finish close together; measured with --durations on 2 cores.
# On the Xeon, side by side: the pipelines' setups det 618 s, pose 550 s, cls 493 s,
# seg 354 s, the AVX2-cap rerun 296 s; the uint8, ExecuTorch and detection-head modules
# 150-200 s each.
LONGEST_FIRST = ("pose-pipeline-run", "hardening-run", "tests/test_pipeline_tasks.py[cls]",
                 "tests/test_pipeline_det.py", "tests/test_cpu_families.py",
                 "tests/test_pipeline_tasks.py[seg]", "tests/test_uint8_input.py",
                 "tests/test_export_executorch.py", "tests/test_det_task.py", "tests/test_export_coreml.py")
_TESTS_DIR = Path(__file__).resolve().parent


def _module_groups() -> tuple[dict[str, str], set[str]]:
    """(``tests/<module>.py`` -> the session run group it belongs to, the modules that
    name XDIST_SPLIT_BY), from one read of each test module."""
    shared, split = {}, set()
    for path in sorted(_TESTS_DIR.glob("test_*.py")):
        text, module = path.read_text(), f"tests/{path.name}"
        used = [group for fixture, group in SHARED_RUNS.items() if re.search(rf"\b{fixture}\b", text)]
        if len(used) > 1:
            raise RuntimeError(f"{path.name} uses the session runs {used}: one module may use one "
                               "(each run has its own xdist group, tests/conftest.py)")
        if used:
            shared[module] = used[0]
        if re.search(r"^XDIST_SPLIT_BY = ", text, re.M):
            split.add(module)
    return shared, split


def xdist_group_of(nodeid: str, shared: dict[str, str], split: set[str]) -> str:
    module = nodeid.split("::", 1)[0]
    if module in shared:
        return shared[module]
    param = re.search(r"\[([^\]]*)\]$", nodeid)
    if module in split and param:
        return f"{module}[{param.group(1)}]"
    return module


@pytest.hookimpl(optionalhook=True)  # known only while xdist is loaded
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: the groups above (a LoadScope scheduler whose scope is the group)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared, split = _module_groups()

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid, shared, split)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    shared, split = _module_groups()
    rank = {g: k for k, g in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(xdist_group_of(item.nodeid, shared, split), len(rank)))  # stable
