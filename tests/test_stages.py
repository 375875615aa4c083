"""Stage scripts on tiny data: outputs of resumed and failed runs, inputs of the wrong width."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT

import attention_clusters

SRC = Path(attention_clusters.__file__).parents[1]  # the package under test
VIDEOS = {"train": 256, "val": 64, "test": 64}


def write_features(repo, width):
    rng = np.random.default_rng(0)
    for split, n in VIDEOS.items():
        np.save(repo / f"data/features/{split}.npy", rng.standard_normal((n, 25, width)).astype(np.float32))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """dvc.yaml, params.yaml (2 epochs), the code, and random features and labels."""
    repo = tmp_path_factory.mktemp("stages")
    shutil.copy(ROOT / "dvc.yaml", repo)
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    tree.update(epochs=2, batch_size=16)
    (repo / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    (repo / "stages").symlink_to(SRC.parent / "stages")  # the stage scripts beside the package under test
    (repo / "src").symlink_to(SRC)
    for folder in ("data/features", "data/flash", "data/mnist"):
        (repo / folder).mkdir(parents=True)
    provenance = {"source": "test", "full_mnist": False, "counts": {"train": 4000, "test": 1000}}
    (repo / "data/mnist/source.json").write_text(json.dumps(provenance))  # eval reports it
    write_features(repo, 50)
    rng = np.random.default_rng(1)
    for split, n in VIDEOS.items():
        np.save(repo / f"data/flash/{split}_labels.npy", rng.integers(0, 1024, n).astype(np.uint16))
    np.save(repo / "data/flash/test_videos.npy", np.zeros((VIDEOS["test"], 25, 28, 28), np.uint8))
    return repo


def stage(repo, name, *wrap):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(
        [*wrap, sys.executable, f"stages/{name}.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )


def live_files(repo):
    return {str(p.relative_to(repo)): p.read_text() for p in sorted((repo / "dvclive").rglob("*")) if p.is_file()}


def test_finished_run_regenerates_deleted_dvclive_outputs(repo):
    assert stage(repo, "train").returncode == 0
    complete = live_files(repo)
    assert json.loads(complete["dvclive/metrics.json"])["step"] == 1
    assert len(complete["dvclive/plots/metrics/val_top1.tsv"].splitlines()) == 3  # header + 2 epochs
    (repo / "dvclive/metrics.json").unlink()
    result = stage(repo, "train")
    assert result.returncode == 0 and "resuming after epoch 2" in result.stdout
    assert live_files(repo) == complete
    shutil.rmtree(repo / "dvclive/plots")
    assert stage(repo, "train").returncode == 0
    assert live_files(repo) == complete


mount_namespaces = subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not mount_namespaces, reason="needs root and unshare -m (a read-only bind mount)")
def test_failed_run_leaves_previous_outputs_intact(repo):
    before = live_files(repo)
    model = (repo / "models/attention_cluster.ckpt").read_bytes()
    tree = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(dict(tree, lr=0.002), sort_keys=False))  # a fresh run
    try:
        read_only = f'mount --bind {repo}/models {repo}/models && mount -o remount,bind,ro {repo}/models && exec "$@"'
        result = stage(repo, "train", "unshare", "-m", "sh", "-c", read_only, "sh")
    finally:
        (repo / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train: error: models/train_state/") and "(Read-only file system, EROFS)" in last
    assert "Traceback" not in result.stderr
    assert live_files(repo) == before
    assert (repo / "models/attention_cluster.ckpt").read_bytes() == model


@pytest.mark.parametrize("name", ["eval", "export_mindir"])
def test_test_features_of_the_wrong_width_are_one_line(repo, name):
    write_features(repo, 49)
    try:
        result = stage(repo, name)
    finally:
        write_features(repo, 50)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"{name}: error: data/features/test.npy: features are 49 wide, the "
        "model expects 50; re-run the feature stage: dvc repro feature"
    )


def test_training_features_of_the_wrong_width_are_refused_before_training(repo):
    write_features(repo, 49)
    try:
        result = stage(repo, "train")
    finally:
        write_features(repo, 50)
    assert result.returncode == 1 and "epoch 1/" not in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "train: error: data/features/train.npy: features are 49 wide, the "
        "model expects 50; re-run the feature stage: dvc repro feature"
    )
