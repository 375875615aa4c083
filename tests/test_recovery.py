"""What a failed stage says and leaves: hints naming the smallest fix, true in each case."""

import errno

import numpy as np
import pytest

from attention_clusters import cli, recovery, storage
from attention_clusters.errors import UserError

DVC_YAML = """stages:
  flash:
    cmd: python stages/flash.py
    outs:
      - data/flash
    metrics:
      - metrics/flash.json:
          cache: false
  feature:
    cmd: python stages/feature.py
    outs:
      - data/features
  fresh:
    cmd: python stages/fresh.py
    outs:
      - data/fresh.npy
"""
DVC_LOCK = """schema: '2.0'
stages:
  flash:
    outs:
    - path: data/flash
    - path: metrics/flash.json
  feature:
    outs:
    - path: data/features
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A folder with dvc.yaml and dvc.lock (fresh never ran), as the working directory."""
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "dvc.lock").write_text(DVC_LOCK)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_damaged_npy_names_the_checkout_of_that_file_and_the_one_stage(repo):
    (repo / "data/features").mkdir(parents=True)
    (repo / "data/features/test.npy").write_bytes(b"not an array")
    with pytest.raises(UserError) as err:
        storage.load_npy("data/features/test.npy")
    assert str(err.value) == (
        "data/features/test.npy: not a valid .npy array file; "
        "restore it: dvc checkout -f data/features/test.npy, or re-make it: dvc repro -s feature"
    )


def test_file_hints_offer_only_what_exists(repo):
    restore = "restore it: git checkout metrics/flash.json, or re-make it: dvc repro -s flash"
    assert recovery.file_hint("metrics/flash.json") == restore
    assert recovery.file_hint("data/fresh.npy") == "re-make it: dvc repro -s fresh"  # no earlier run to restore
    assert recovery.file_hint("elsewhere/x.npy") == "re-create it with the stage that writes it"


def test_restore_hint_names_only_missing_recorded_outputs(repo):
    assert recovery.restore_hint("flash") == (
        "its previous outputs are missing (dvc repro deletes them before running the stage); "
        "restore them: dvc checkout data/flash && git checkout metrics/flash.json"
    )
    (repo / "data/flash").mkdir(parents=True)
    assert recovery.restore_hint("flash").endswith("restore them: git checkout metrics/flash.json")
    (repo / "metrics").mkdir()
    (repo / "metrics/flash.json").write_text("{}")
    assert recovery.restore_hint("flash") is None  # ran by itself: nothing deleted
    assert recovery.restore_hint("fresh") is None  # never succeeded: nothing to restore
    assert recovery.restore_hint("sweep") is None  # not a stage


def test_failure_line_names_the_recovery_command(repo, capsys):
    full = "metrics/flash.json: cannot write 20 bytes (No space left on device, ENOSPC); no file was created"

    def fail():
        raise UserError(full)

    with pytest.raises(SystemExit) as exit_:
        cli.main("flash", fail, check_inputs=False)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"flash: error: {full}; its previous outputs are missing (dvc repro deletes them before running the stage); "
        "restore them: dvc checkout data/flash && git checkout metrics/flash.json"
    ]


def test_failure_details_follow_the_line_indented(repo, capsys):
    (repo / "data/flash").mkdir(parents=True)
    (repo / "metrics").mkdir()
    (repo / "metrics/flash.json").write_text("{}")

    def fail():
        raise UserError("it failed", details=["first", "second"])

    with pytest.raises(SystemExit):
        cli.main("flash", fail, check_inputs=False)
    assert capsys.readouterr().err.splitlines() == ["flash: error: it failed", "  first", "  second"]


@pytest.mark.parametrize("existed, ending", [(True, "the previous file is unchanged"), (False, "no file was created")])
def test_disk_full_line_says_what_is_left(tmp_path, existed, ending):
    path = tmp_path / "frames.npy"
    if existed:
        np.save(path, np.arange(3))
    with pytest.raises(UserError) as err:
        with storage.atomic_path(path, 1200):
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write on a full disk
    assert str(err.value) == f"{path}: cannot write 1,200 bytes (No space left on device, ENOSPC); {ending}"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["frames.npy"] if existed else [])
