"""The command line: tables, info, and one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hrnet_edge.cli import main


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "hrnet_w32_pose" in out and "28.54M" in out and "7.12" in out
    assert "hrnet_w48_seg" in out and "696.18" in out


def test_models_json_filter(capsys):
    assert main(["models", "*w18_small*", "--task", "cls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["hrnet_w18_small_v1_cls", "hrnet_w18_small_v2_cls"]
    assert abs(rows[0]["params_m"] - 13.18) < 0.01


def test_info_with_override(capsys):
    assert main(["info", "hrnet_w8_pose", "--set", "input_size=[128,96]", "width=4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["output_shape"] == [1, 17, 32, 24]
    assert info["branch_channels"] == [4, 8, 16, 32]


@pytest.mark.parametrize("argv, needle", [
    (["info", "hrnet_w8_pse"], "did you mean 'hrnet_w8_pose'"),
    (["info", "hrnet_w8_pose", "--set", "widht=4"], "unknown override key"),
    (["info", "hrnet_w8_pose", "--set", "width"], "key=value"),
    (["models", "nothing*"], "no model matches"),
    (["check", "--run", "/nonexistent/run"], "not a run directory"),
])
def test_user_errors_are_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle.lower() in err.lower()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_script_help_and_error():
    exe = [sys.executable, "-m", "hrnet_edge.cli"]
    out = subprocess.run(exe + ["--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for sub in ("models", "info", "train", "qat", "export", "check", "pipeline"):
        assert sub in out.stdout
    bad = subprocess.run(exe + ["info", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
