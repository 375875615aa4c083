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


def test_bad_features_stop_with_one_line(tmp_path):
    missing = run_script("--features", str(tmp_path / "nope.npy"))
    assert missing.returncode == 1 and "nope.npy: file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((4, 50), np.float32))
    result = run_script("--features", str(flat))
    assert result.returncode == 1 and "expected a 3-dimensional array" in result.stderr
