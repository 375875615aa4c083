"""Atomic writers on a full or read-only disk: one line, no temporaries, old files intact."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import attention_clusters

WORKER = str(ROOT / "tests" / "disk_worker.py")
SRC = str(Path(attention_clusters.__file__).parents[1])  # the package under test


def mount_namespaces_work():
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not mount_namespaces_work(), reason="needs root and unshare -m (a private tmpfs)")


def run_on_tmpfs(tmp_path, *modes, remount_ro=False):
    """Run disk_worker.py modes in order on a 1 MB tmpfs over tmp_path/disk; returns its cases."""
    disk = tmp_path / "disk"
    disk.mkdir()
    steps = [f"mount -t tmpfs -o size=1m tmpfs {disk}", f"{sys.executable} {WORKER} {disk} prepare"]
    if remount_ro:
        steps.append(f"mount -o remount,ro {disk}")
    steps += [f"{sys.executable} {WORKER} {disk} {mode}" for mode in modes]
    env = dict(os.environ, PYTHONPATH=SRC)
    result = subprocess.run(
        ["unshare", "-m", "sh", "-ec", " && ".join(steps)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return {case["case"]: case for case in map(json.loads, result.stdout.splitlines())}


UNCHANGED = "the previous file is unchanged"


def test_full_disk_is_one_line_with_bytes_and_cause(tmp_path):
    cases = run_on_tmpfs(tmp_path, "full")
    disk = tmp_path / "disk"
    expected = {
        "npy_writer": f"{disk}/videos.npy: cannot write 1,254,400 bytes (No space left on device, ENOSPC); "
        + UNCHANGED,
        "save_npy": f"{disk}/frames.npy: cannot write 1,254,400 bytes (No space left on device, ENOSPC); " + UNCHANGED,
        "checkpoint": f"{disk}/model.ckpt: cannot write 13,124,864 bytes (No space left on device, ENOSPC); "
        + UNCHANGED,
    }
    for name, message in expected.items():
        assert cases[name]["outcome"] == message
        assert cases[name]["intact"] is True
        assert cases[name]["files"] == ["frames.npy", "model.ckpt", "videos.npy"]  # no temporary left


def test_read_only_folder_is_one_line(tmp_path):
    cases = run_on_tmpfs(tmp_path, "read_only", remount_ro=True)
    disk = tmp_path / "disk"
    assert (
        cases["save_npy"]["outcome"]
        == f"{disk}/frames.npy: cannot write 20 bytes (Read-only file system, EROFS); the previous file is unchanged"
    )
    assert cases["npy_writer"]["outcome"].startswith(
        f"{disk}/videos.npy: cannot write 1,254,400 bytes (Read-only file system, EROFS)"
    )
    assert all(case["intact"] for case in cases.values())
