import os
import subprocess
import sys

import numpy as np
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "attention_at_init.py"


def run_script(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_reports_each_case_and_tiny_weights_pool_uniformly(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "val.npy"
    np.save(path, rng.normal(-7, 3, size=(64, 25, 50)).astype(np.float32))
    result = run_script("--features", str(path), "--videos", "32", "--seeds", "1", "2")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert len(rows) == 8  # fc x init x seed
    for fc, init, _seed, entropy, max_weight, *_ in rows:
        assert 0 <= float(entropy) <= 1 and 1 / 25 - 1e-3 <= float(max_weight) <= 1
        if (fc, init) == ("2", "modelzoo"):  # N(0, 0.01) weights, zero biases: scores ~0, weights ~1/L
            assert float(entropy) > 0.999 and abs(float(max_weight) - 1 / 25) < 0.005
    assert "32 videos, L=25, F=50" in result.stdout


def one_line_error(result, text):
    """The script stopped with one error line containing ``text``, and printed nothing."""
    lines = [line for line in result.stderr.splitlines() if "deprecated" not in line and line.strip()]
    return result.returncode == 1 and result.stdout == "" and len(lines) == 1 and text in lines[0]


def test_bad_features_stop_with_one_line(tmp_path):
    missing = run_script("--features", str(tmp_path / "nope.npy"))
    assert one_line_error(missing, "nope.npy: file not found"), missing.stderr
    cases = {
        "flat": (np.zeros((4, 50), np.float32), "expected a 3-dimensional array"),
        "ints": (np.zeros((4, 25, 50), np.int64), "expected float32 features (N, L, F), got int64"),
        "none": (
            np.zeros((0, 25, 50), np.float32),
            "expected float32 features (N, L, F) with N, L, F >= 1, got shape (0, 25, 50)",
        ),
        "noframes": (
            np.zeros((4, 0, 50), np.float32),
            "expected float32 features (N, L, F) with N, L, F >= 1, got shape (4, 0, 50)",
        ),
        "nan": (np.full((4, 25, 50), np.nan, np.float32), "the first 4 videos hold NaN or inf values"),
    }
    for name, (array, text) in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
        result = run_script("--features", str(tmp_path / f"{name}.npy"))
        assert one_line_error(result, f"{name}.npy: {text}"), (name, result.stderr)
    (tmp_path / "folder.npy").mkdir()
    folder = run_script("--features", str(tmp_path / "folder.npy"))
    assert one_line_error(folder, "folder.npy: a folder; expected a float32 (N, L, F) .npy features file")


def test_bad_options_stop_with_one_line_before_reading_the_features(tmp_path):
    missing = str(tmp_path / "nope.npy")  # the options are checked first
    for args, text in [
        (["--videos", "0"], "--videos 0: expected an integer >= 1"),
        (["--natt", "0"], "--natt 0: expected an integer in 1..4096"),
        (["--natt", "100000"], "--natt 100000: expected an integer in 1..4096"),  # would need ~20 GB
        (["--seeds", "1", "-1"], "--seeds -1: expected integers in 0..4294967295"),
        (["--seeds", str(2**32)], f"--seeds {2**32}: expected integers in 0..4294967295"),
    ]:
        result = run_script("--features", missing, *args)
        assert one_line_error(result, text), (args, result.stderr)
