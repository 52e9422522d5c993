"""make gpu-check refuses a machine without a GPU, loudly, before it reads any data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_fails_clearly_without_a_gpu(tmp_path):
    tf = pytest.importorskip("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: run make gpu-check itself")
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "gpu_check.py"), "--shards", str(tmp_path / "none"),
                           "--vocab", str(tmp_path / "none"), "--reviews", str(tmp_path / "none"), "--runs",
                           str(tmp_path / "runs"), "--output", str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: no GPU is visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty")
    assert "never falls back to the CPU" in proc.stderr
    assert "cuInit" not in proc.stderr  # the start-up noise is filtered
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "runs").exists()


def test_the_runs_it_trains_are_valid_settings():
    from reviewpipe.config import load_conf
    from reviewpipe.gpu_check import RUNS

    assert [key for key, _, _ in RUNS] == ["default", "seed", "default_length_step"]
    confs = {key: load_conf(None, [f"model.preset={preset}", *extra]) for key, preset, extra in RUNS}
    assert confs["default_length_step"].train.length_step == 32 and confs["default"].train.length_step == 0
    assert confs["seed"].model.units == 32 and confs["default_length_step"].model.units == 64
