"""bench/speed.py refuses arguments that would measure nothing useful, before it measures anything."""

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "1e400", "1e308", "601"])
def test_seconds_must_be_finite_and_positive(value):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/speed.py"), "--seconds", value], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "expected a number > 0 and <= 600" in result.stderr.strip().splitlines()[-1]
    assert "host:" not in result.stdout  # stopped before the first measurement


def test_cpus_must_be_ones_this_process_may_use():
    cmd = [sys.executable, str(ROOT / "bench/speed.py"), "--cpus", "0", "4096"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--cpus 4096: not a CPU this process may use" in result.stderr.strip().splitlines()[-1]
    assert "host:" not in result.stdout
