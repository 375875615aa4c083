"""One small end-to-end `dvc repro` of the whole pipeline on the embedded MNIST subset.

4 train and 4 test videos per label (4,096 each; 1,024 val) and 60 epochs: small enough for a
minute or two, enough for the default model (fc=1, natt=1, ModelZoo lr) to learn well above
chance.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from attention_clusters import mnist
from conftest import ROOT, synthetic_split

BIN = Path(sys.executable).parent


def run(cmd, cwd, check=True):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(cwd / "src"))
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def set_params(repo, **changes):
    path = repo / "params.yaml"
    tree = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        node = tree
        *groups, last = key.split(".")
        for group in groups:
            node = node[group]
        node[last] = value
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the project's files in a fresh git repo, with tiny counts."""
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("data/", "models/", "dvclive/", "plots/")):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    counts = {"flash.train_per_label": 30, "flash.val_per_label": 1, "flash.min_per_label": 4}  # train 30 -> 2 -> floor 4, val 1, test 10 -> 1 -> floor 4
    set_params(repo, **{"mnist.source": "embedded", **counts, "epochs": 60, "batch_size": 32})
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "x", "--allow-empty"], repo, check=False)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"], repo)
    run([str(BIN / "dvc"), "repro"], repo)
    return repo


def test_data_stages_outputs(repo):
    source = json.loads((repo / "data/mnist/source.json").read_text())
    assert source["counts"] == {"train": 4000, "test": 1000} and source["full_mnist"] is False
    videos = np.load(repo / "data/flash/train_videos.npy", mmap_mode="r")
    labels = np.load(repo / "data/flash/train_labels.npy")
    assert videos.shape == (4096, 25, 28, 28) and videos.dtype == np.uint8
    assert np.bincount(labels, minlength=1024).tolist() == [4] * 1024  # 30 scaled to 2, floored at 4
    assert np.load(repo / "data/flash/val_labels.npy").shape == (1024,)  # 1 asked for: never more
    assert np.load(repo / "data/flash/test_videos.npy", mmap_mode="r").shape == (4096, 25, 28, 28)
    assert np.load(repo / "data/noisy/train_frames.npy", mmap_mode="r").shape == (22000, 28, 28)
    assert (repo / "data/flash/preview.png").read_bytes()[:4] == b"\x89PNG"


def test_model_stages_outputs(repo):
    feature = json.loads((repo / "metrics/feature.json").read_text())
    assert feature["noisy_test_top1"] > 60  # one epoch on 22,000 frames; chance is 9 %
    if "ONEDNN_MAX_CPU_ISA" not in os.environ and feature["cpu"]["isa"] in ("avx2", "avx512"):
        assert feature["cpu"]["onednn_max_cpu_isa"] == "AVX2"  # the stage's own cap
        assert feature["kernels"] == "phase convolutions"
    assert np.load(repo / "data/features/train.npy", mmap_mode="r").shape == (4096, 25, 50)
    report = json.loads((repo / "metrics/eval.json").read_text())
    assert report["test_videos"] == 4096 and report["natt"] == 1 and report["epochs"] == 60
    assert sum(v["videos"] for v in report["top1_by_digit_count"].values()) == 4096
    assert 0 <= report["top1"] <= report["top5"] <= 100
    assert report["train_minutes"] > 0 and 1 <= report["best_epoch"] <= 60
    live = json.loads((repo / "dvclive/metrics.json").read_text())
    assert live["step"] == 59 and "val_top1" in live


def test_offline_default_learns(repo):
    """The default model on the embedded digits: top-1 far above chance (1/1024 = 0.1 %)."""
    report = json.loads((repo / "metrics/eval.json").read_text())
    assert report["top1"] > 0.5 and report["top5"] > 2.5  # 5x chance, on 4,096 test videos
    curve = (repo / "dvclive/plots/metrics/train_loss.tsv").read_text().split()[3::2]
    assert float(curve[-1]) < float(curve[0]) - 0.3  # from ln(1024) = 6.93 down
    assert (repo / "plots/attention.png").read_bytes()[:4] == b"\x89PNG"


def test_export_and_infer_agree_with_eval(repo):
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert exported["batch_size"] == 64 and exported["mindir_max_abs_diff"] < 1e-4
    assert (repo / "models/attention_cluster.mindir").stat().st_size > 0
    infer = json.loads((repo / "metrics/infer.json").read_text())
    report = json.loads((repo / "metrics/eval.json").read_text())
    assert infer["test_videos"] == 4096 and infer["top1"] == pytest.approx(report["top1"], abs=1e-3)
    assert infer["matches_eval"] is True and infer["latency_ms_p95"] >= infer["latency_ms_median"] > 0
    assert len(list((repo / "data/infer/result").glob("batch_*.bin"))) == 64


def test_second_repro_does_nothing_and_data_is_deterministic(repo):
    again = run([str(BIN / "dvc"), "repro"], repo).stdout
    assert re.findall(r"Running stage '(\w+)'", again) == ["check"]  # the stage that always runs
    assert "Stage 'download_mnist' didn't change, skipping" in again
    run([str(BIN / "dvc"), "repro", "-f", "-s", "flash"], repo)
    status = run([str(BIN / "dvc"), "status", "flash"], repo).stdout
    assert "changed outs" not in status, status


def test_bad_param_stops_with_one_line(repo):
    set_params(repo, natt=0)
    try:
        result = run([str(BIN / "dvc"), "repro", "train"], repo, check=False)
    finally:
        set_params(repo, natt=1)
    assert result.returncode != 0
    assert "check: error: params.yaml: natt must be an integer in 1..4096, got 0" in result.stderr  # before train starts
    assert "Traceback" not in result.stderr


def test_exp_run_with_a_model_parameter(repo):
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "after repro"], repo, check=False)
    result = run([str(BIN / "dvc"), "exp", "run", "-S", "natt=2", "-S", "epochs=2"], repo)
    assert "Running stage 'train'" in result.stdout and "Running stage 'flash'" not in result.stdout
    report = json.loads((repo / "metrics/eval.json").read_text())
    assert report["natt"] == 2 and report["test_videos"] == 4096
    assert json.loads((repo / "metrics/infer.json").read_text())["top1"] == pytest.approx(report["top1"], abs=1e-3)
    table = run([str(BIN / "dvc"), "exp", "show", "--csv"], repo).stdout
    assert "natt" in table.splitlines()[0] and len(table.splitlines()) >= 3


def test_exp_run_with_a_value_validation_refuses_records_no_experiment(repo):
    before = run([str(BIN / "dvc"), "exp", "show", "--csv"], repo).stdout
    params = (repo / "params.yaml").read_text()
    try:
        for override in ("fc=true", "natt=1.0", "+nat=32"):
            result = run([str(BIN / "dvc"), "exp", "run", "-S", override], repo, check=False)
            assert "check: error: params.yaml: " in result.stderr and "Ran experiment" not in result.stdout, override
            (repo / "params.yaml").write_text(params)
    finally:
        (repo / "params.yaml").write_text(params)
    assert run([str(BIN / "dvc"), "exp", "show", "--csv"], repo).stdout == before


def write_mnist_folder(folder, seed):
    folder.mkdir(exist_ok=True)
    for split, n in (("train", 60), ("test", 20)):
        images, labels = synthetic_split(n, seed + n)
        image_name, label_name = mnist.FILES[split]
        (folder / f"{image_name}.gz").write_bytes(gzip.compress(mnist.encode_images(images), mtime=0))
        (folder / f"{label_name}.gz").write_bytes(gzip.compress(mnist.encode_labels(labels), mtime=0))


def test_new_files_in_the_source_folder_are_seen(repo, tmp_path):
    folder = tmp_path / "mnist"
    write_mnist_folder(folder, seed=0)
    set_params(repo, **{"mnist.source": str(folder)})
    try:
        run([str(BIN / "dvc"), "repro", "download_mnist"], repo)
        first = json.loads((repo / "data/mnist/source.json").read_text())["sha256"]
        write_mnist_folder(folder, seed=1)  # other valid MNIST files, same names
        again = run([str(BIN / "dvc"), "repro", "download_mnist"], repo).stdout
        assert "Running stage 'download_mnist'" in again
        assert json.loads((repo / "data/mnist/source.json").read_text())["sha256"] != first
    finally:
        set_params(repo, **{"mnist.source": "embedded"})
        run([str(BIN / "dvc"), "repro", "download_mnist"], repo)


def test_sweep_queues_runs_and_tabulates_a_published_row(repo):
    """scripts/sweep.py on the tiny data: one published row, one epoch, through dvc's queue."""
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "before sweep"], repo, check=False)
    sweep = [sys.executable, "scripts/sweep.py"]
    queued = run([*sweep, "queue", "--rows", "1/4", "--epochs", "1", "--run"], repo)
    assert "dvc exp run --queue -n pub-fc1-natt4-e1 -S fc=1 -S natt=4 -S lr=0.0001 -S weight_decay=0 -S epochs=1" in queued.stdout
    run([*sweep, "table"], repo)
    table = pd.read_csv(repo / "metrics/published_comparison.csv")
    row = table[(table.fc == 1) & (table.natt == 4)].iloc[0]
    assert row.experiment == "pub-fc1-natt4-e1" and row.epochs == 1 and 0 <= row.ours_test_top1 <= 100
    assert row.published_ascend == 72.7 and len(table) == 16
