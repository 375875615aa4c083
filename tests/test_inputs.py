"""Every stage checks all its inputs (its dvc.yaml deps) before it starts work."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT

import attention_clusters
from attention_clusters import inputs
from attention_clusters.errors import UserError

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
SRC = Path(attention_clusters.__file__).parents[1]


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """An empty working folder with the project's dvc.yaml, code and params (no data)."""
    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "stages").symlink_to(ROOT / "stages")
    (tmp_path / "src").symlink_to(SRC)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_script_runs_the_check_for_its_own_name(stage):
    script = STAGES[stage]["cmd"].split()[-1]
    assert re.search(rf'cli\.main\("{stage}", run\)', (ROOT / script).read_text())


def test_missing_folder_names_the_stage_that_writes_it(repo):
    (repo / "data/mnist").mkdir(parents=True)
    (repo / "data/mnist/source.json").write_text("{}")
    (repo / "data/noisy").mkdir(parents=True)
    np.save(repo / "data/noisy/train_frames.npy", np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(UserError) as err:
        inputs.check("feature")
    assert str(err.value) == "data/flash: input of stage feature not found; run the flash stage first: dvc repro flash"


def test_missing_file_empty_folder_and_missing_code(repo):
    with pytest.raises(UserError, match="^data/features: input of stage eval not found; run the feature stage first"):
        (repo / "models").mkdir()
        for name in ("attention_cluster.ckpt", "attention_cluster.json"):
            (repo / "models" / name).write_text("x")
        inputs.check("eval")
    (repo / "data/flash").mkdir(parents=True)
    (repo / "data/mnist").mkdir(parents=True)
    (repo / "data/mnist/source.json").write_text("{}")
    with pytest.raises(
        UserError, match="^data/flash: input of stage feature is an empty folder; run the flash stage first"
    ):
        (repo / "data/noisy").mkdir(parents=True)
        (repo / "data/noisy/x.npy").write_text("x")
        inputs.check("feature")
    (repo / "stages").unlink()
    with pytest.raises(UserError, match="^stages/sample.py: input of stage sample not found; restore it"):
        inputs.check("sample")


def test_feature_stage_stops_before_training(repo):
    """Before this check, the stage trained the extractor on Noisy-MNIST, then found no videos."""
    (repo / "data/mnist").mkdir(parents=True)
    (repo / "data/mnist/source.json").write_text("{}")
    (repo / "data/noisy").mkdir(parents=True)
    for split in ("train", "test"):
        np.save(repo / f"data/noisy/{split}_frames.npy", np.zeros((640, 28, 28), np.uint8))
        np.save(repo / f"data/noisy/{split}_labels.npy", (np.arange(640) % 11).astype(np.uint8))
    env = dict(os.environ, PYTHONPATH=str(SRC))
    result = subprocess.run(
        [sys.executable, "stages/feature.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == "feature: error: data/flash: input of stage feature not found; run the flash stage first: dvc repro flash"
    )
    assert "extractor epoch" not in result.stdout + result.stderr
