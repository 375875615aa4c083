"""One small end-to-end `dvc repro` of the whole pipeline on the embedded MNIST subset.

4 train and 4 test videos per label (4,096 each; 1,024 val) and 60 epochs: small enough for a
minute or two, enough for the default model (fc=1, natt=1, ModelZoo lr) to learn well above
chance.
"""

import contextlib
import gzip
import hashlib
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
from conftest import ROOT, synthetic_split
from test_deps import lock_mismatches

from attention_clusters import idx, inference, inputs, mnist, onednn

pytestmark = pytest.mark.slow  # a whole dvc repro, then experiments on it: minutes

BIN = Path(sys.executable).parent
AUDIT = ROOT / "tests" / "audit"  # sitecustomize.py: records what each stage reads
# params a stage reads that cannot change its outputs, so dvc.yaml does not declare them
READ_NOT_OUTPUT = {
    "download_mnist": {"mnist.timeout_s", "mnist.retries"},  # how hard to try a mirror
    "train": {  # how and where the workers start
        "distributed.launcher",
        "distributed.master_port",
        "distributed.rank_table",
        "distributed.master_addr",
        "distributed.node_rank",
    },
    "eval": {"fc", "natt"},  # only compared with the checkpoint's JSON
    "export_mindir": {"fc", "natt"},
}


# files a stage reads that are not inputs of its outputs: the repository's git and DVC metadata
# (DVCLive names the experiment from it) and the train stage's own resumable state, which it
# reuses only for the same inputs (resume.fingerprint)
NOT_INPUTS = [".git", ".dvc", ".gitignore", ".dvcignore", "models/train_state"]


def run(cmd, cwd, check=True, audit_dir=None):
    """Run ``cmd`` in ``cwd`` with this venv's tools and ``cwd``'s code, and no oneDNN ISA cap of
    the caller's (the stages set their own): returns the CompletedProcess."""
    env = {name: value for name, value in os.environ.items() if name not in onednn.CAP_VARIABLES}
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(cwd / "src"))
    if audit_dir is not None:
        env.update(PYTHONPATH=f"{cwd / 'src'}{os.pathsep}{AUDIT}", AC_AUDIT_DIR=str(audit_dir))
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
        generated = name.startswith(("data/", "models/", "dvclive/", "plots/")) and not name.startswith(
            "data/mnist_files/"
        )
        if (ROOT / name).is_file() and not generated:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    counts = {
        "flash.train_per_label": 30,
        "flash.val_per_label": 1,
        "flash.min_per_label": 4,
    }  # train 30 -> 2 -> floor 4, val 1, test 10 -> 1 -> floor 4
    set_params(repo, **{"mnist.source": "embedded", **counts, "epochs": 60, "batch_size": 32})
    (repo.parent / "audit").mkdir()
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "x", "--allow-empty"], repo, check=False)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"], repo)
    run([str(BIN / "dvc"), "repro"], repo, audit_dir=repo.parent / "audit")
    return repo


@contextlib.contextmanager
def fixture_state(repo):
    """Give the body the workspace as the fixture ran it and put params.yaml, dvc.lock and the
    DVC outputs back afterwards: yields ``{"params.yaml": text, "dvc.lock": text}``."""
    saved = {name: (repo / name).read_text() for name in ("params.yaml", "dvc.lock")}
    try:
        yield saved
    finally:
        for name, text in saved.items():
            (repo / name).write_text(text)
        run([str(BIN / "dvc"), "checkout", "--force"], repo)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def audits(repo):
    """stage -> the files it opened for reading and the params keys it read (tests/audit)."""
    records = {}
    for path in (repo.parent / "audit").glob("*.json"):
        record = json.loads(path.read_text())
        records[record["stage"]] = record
    return records


def in_group(key, declared):
    """Whether dotted params key ``key`` is the declared key or inside the declared group."""
    return key == declared or key.startswith(declared + ".")


def covered(path, declared):
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


ATOMIC_TMP = re.compile(r"^(?P<folder>(?:.*/)?)\.(?P<stem>[^/]+)\.tmp-\d+(?P<suffix>\.[^/.]+)?$")


def final_path(path):
    """The output a ``storage.atomic_path`` temporary file becomes (``path`` itself otherwise): a
    stage reading back what it is writing reads its own output, not an input."""
    match = ATOMIC_TMP.match(path)
    return f"{match['folder']}{match['stem']}{match['suffix'] or ''}" if match else path


def test_every_stage_declares_the_files_it_reads(repo):
    """What each stage opened in the full run is among its deps (or its own outputs)."""
    stages = inputs.load_stages("check", repo / "dvc.yaml")
    records = audits(repo)
    assert set(records) == set(stages)  # every stage ran under the audit
    folder = yaml.safe_load((repo / "params.yaml").read_text())["mnist"]["folder"]
    for name, record in records.items():
        spec = stages[name]
        deps = [d.replace("${mnist.folder}", folder) for d in inputs._paths(spec.get("deps"))]
        outs = inputs._paths(spec.get("outs", []) + spec.get("metrics", []) + spec.get("plots", []))
        data = [
            f
            for f in record["read"]
            if "__pycache__" not in f and not f.endswith(inputs.CODE_SUFFIXES) and not (repo / f).is_dir()
        ]
        known = deps + outs + ["params.yaml", "dvc.yaml", *NOT_INPUTS]
        undeclared = [f for f in data if not covered(final_path(f), known)]
        assert not undeclared, f"{name} reads {undeclared} but dvc.yaml does not list them"
        code = {
            f.replace("__pycache__/", "").split(".cpython")[0] + ".py" for f in record["read"] if "__pycache__" in f
        }
        assert code <= set(deps), f"{name} imported {sorted(code - set(deps))}, not in its deps"


def test_every_stage_declares_the_params_that_shape_its_outputs(repo):
    """The params each stage read in the full run are its declared params (a group covers its keys),
    apart from READ_NOT_OUTPUT; and it declares nothing it never read."""
    stages = inputs.load_stages("check", repo / "dvc.yaml")
    for name, record in audits(repo).items():
        if name == "check":
            continue  # depends on the whole of params.yaml as a file
        declared = stages[name].get("params", [])
        used = set(record["params"]) - READ_NOT_OUTPUT.get(name, set())
        undeclared = sorted(k for k in used if not any(in_group(k, d) for d in declared))
        assert not undeclared, f"{name} reads params {undeclared} that dvc.yaml does not declare"
        unread = [d for d in declared if not any(in_group(k, d) for k in used)]
        assert not unread, f"{name} declares params {unread} it never reads"
        idle = [k for k in READ_NOT_OUTPUT.get(name, ()) for d in declared if in_group(k, d)]
        assert not idle, f"{name} declares params {idle} that cannot change its outputs (e.g. through their group)"


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
    assert feature["cpu"]["onednn_max_cpu_isa"] == "AVX2"  # the stage's own cap: run() passes none
    fast = "phase convolutions" if feature["cpu"]["isa"] in ("avx2", "avx512") else "banded matmul"
    assert feature["kernels"] == fast
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
    assert len(list((repo / "data/infer/result").glob("batch_*.bin"))) == 64
    predictions, labels = inference.postprocess(repo / "data/infer", 1024)  # the exported model's answers
    np.testing.assert_array_equal(
        predictions, np.load(repo / "models/test_predictions.npy")
    )  # the checkpoint's, in eval
    assert infer["test_videos"] == len(labels) == 4096 and infer["top1"] == report["top1"]
    assert infer["latency_ms_p95"] >= infer["latency_ms_median"] > 0


def test_infer_fails_where_the_export_disagrees_with_eval(repo):
    """One eval prediction changed: the infer stage names the difference and writes no metrics."""
    saved = repo / "models/test_predictions.npy"
    original, metrics = saved.read_bytes(), (repo / "metrics/infer.json").read_bytes()
    predictions = np.load(saved)
    predictions[7] = (predictions[7] + 1) % 1024
    np.save(saved, predictions)
    try:
        result = run([sys.executable, "stages/infer_310.py"], repo, check=False)
    finally:
        saved.write_bytes(original)
    assert result.returncode == 1
    assert (
        "infer_310: error: 1 of 4096 predictions differ from the eval stage's (models/test_predictions.npy)"
        in result.stderr
    )
    assert (repo / "metrics/infer.json").read_bytes() == metrics


def test_second_repro_does_nothing_and_data_is_deterministic(repo):
    again = run([str(BIN / "dvc"), "repro"], repo).stdout
    assert re.findall(r"Running stage '(\w+)'", again) == []
    assert "Stage 'download_mnist' didn't change, skipping" in again
    assert run([str(BIN / "dvc"), "status"], repo).stdout.strip() == "Data and pipelines are up to date."
    run([str(BIN / "dvc"), "repro", "-f", "-s", "flash"], repo)
    status = run([str(BIN / "dvc"), "status", "flash"], repo).stdout
    assert "changed outs" not in status, status


def test_exp_run_under_a_lock_made_elsewhere_restores_from_the_run_cache(repo):
    """A clone whose committed dvc.lock was made on another machine: its directory outputs are not
    in this DVC cache, while the run cache holds every stage. `dvc exp run` restores the stages
    from the run cache; it used to fail with "failed to load directory ('data', 'mnist')" where a
    stage declared a file inside another stage's directory output (data/mnist/source.json)."""
    with fixture_state(repo) as saved:
        lock = yaml.safe_load(saved["dvc.lock"])
        for entry in (e for stage in lock["stages"].values() for e in stage.get("deps", []) + stage.get("outs", [])):
            if str(entry.get("md5", "")).endswith(".dir"):  # the same directory, hashed elsewhere
                entry["md5"] = hashlib.md5(f"elsewhere {entry['md5']}".encode()).hexdigest() + ".dir"
        (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
        result = run([str(BIN / "dvc"), "exp", "run"], repo, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Stage 'feature' is cached - skipping run" in result.stdout  # the case that failed
    assert re.findall(r"Running stage '(\w+)'", result.stdout) == ["train"]  # persist outs: never run-cached


def test_results_carry_their_code_version(repo, monkeypatch):
    """eval.json names the code of eval and the stages upstream of it, and only that code."""
    monkeypatch.chdir(repo)
    version = json.loads((repo / "metrics/eval.json").read_text())["code_version"]
    assert re.fullmatch("[0-9a-f]{16}", version) and version == inputs.code_version("eval")
    edits = (("stages/infer_310.py", False), ("stages/sample.py", True), ("src/attention_clusters/fused_ops.cc", True))
    for script, changes in edits:  # downstream, upstream, the C++ of train
        text = (repo / script).read_text()
        try:
            (repo / script).write_text(text + "// edited\n")
            assert (inputs.code_version("eval") != version) == changes, script
        finally:
            (repo / script).write_text(text)


def test_a_code_change_retrains_from_epoch_1(repo):
    """After a finished run, a change to the model's code trains anew, never resumes the old state;
    changing it back trains anew again and gives the original checkpoint, byte for byte."""
    model = repo / "src/attention_clusters/models/attention_cluster.py"
    text = model.read_text()
    first = md5(repo / "models/attention_cluster.ckpt")
    changed = text.replace("dropout=0.5,", "dropout=0.2,", 1)  # the default of AttentionCluster
    assert changed != text
    model.write_text(changed)
    try:
        assert ("train", "src/attention_clusters/models/attention_cluster.py", "modified") in lock_mismatches(repo)
        out = run([str(BIN / "dvc"), "repro", "train"], repo).stdout
        assert "resuming" not in out and "epoch 1/60 " in out and "epoch 60/60 " in out
        assert "(epoch 60) is from other code, data, params, kernels or more epochs" in out
        assert md5(repo / "models/attention_cluster.ckpt") != first
    finally:
        model.write_text(text)
    out = run([str(BIN / "dvc"), "repro"], repo).stdout
    assert "resuming" not in out and "epoch 1/60 " in out
    assert md5(repo / "models/attention_cluster.ckpt") == first
    assert run([str(BIN / "dvc"), "status"], repo).stdout.strip() == "Data and pipelines are up to date."


def test_bad_param_stops_with_one_line(repo):
    set_params(repo, natt=0)
    try:
        result = run([str(BIN / "dvc"), "repro", "train"], repo, check=False)
    finally:
        set_params(repo, natt=1)
    assert result.returncode != 0
    assert "train: error: params.yaml: natt must be an integer in 1..4096, got 0" in result.stderr  # before any work
    assert "Traceback" not in result.stderr and "epoch 1/" not in result.stdout


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
        for override in ("fc=true", "natt=1.0", "+nat=32", "mnist.folder=no/such/folder"):
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
        (folder / f"{image_name}.gz").write_bytes(gzip.compress(idx.encode_images(images), mtime=0))
        (folder / f"{label_name}.gz").write_bytes(gzip.compress(idx.encode_labels(labels), mtime=0))


def test_new_files_in_the_source_folder_are_seen(repo, tmp_path):
    folder = tmp_path / "mnist"
    write_mnist_folder(folder, seed=0)
    set_params(repo, **{"mnist.source": "folder", "mnist.folder": str(folder)})
    try:
        run([str(BIN / "dvc"), "repro", "download_mnist"], repo)
        first = json.loads((repo / "data/mnist/source.json").read_text())["sha256"]
        write_mnist_folder(folder, seed=1)  # other valid MNIST files, same names
        again = run([str(BIN / "dvc"), "repro", "download_mnist"], repo).stdout
        assert "Running stage 'download_mnist'" in again
        assert json.loads((repo / "data/mnist/source.json").read_text())["sha256"] != first
    finally:
        set_params(repo, **{"mnist.source": "embedded", "mnist.folder": "data/mnist_files"})
        run([str(BIN / "dvc"), "repro", "download_mnist"], repo)


def test_sweep_trains_a_published_row_and_tabulates_it(repo, tmp_path):
    """scripts/sweep.py run on tiny MNIST files: one published row, one epoch, in the workspace."""
    folder = tmp_path / "mnist"
    write_mnist_folder(folder, seed=0)
    sweep = [sys.executable, "scripts/sweep.py", "run", "--mnist-folder", str(folder), "--rows", "1/4", "--epochs", "1"]
    with fixture_state(repo):
        out = run(sweep, repo).stdout
        assert "dvc exp run -n fc1-natt4 -S fc=1 -S natt=4 -S lr=0.0001 -S weight_decay=0 -S epochs=1" in out
        table = pd.read_csv(repo / "metrics/results.csv", dtype={"code_version": str})
        row = table[(table.fc == 1) & (table.natt == 4)].iloc[0]
        assert (row.fc, row.natt, row.published_ascend, row.epochs_run, row.full_mnist) == (1, 4, 72.7, 1, False)
        assert 0 <= row.ours_val_selected <= row.ours_best_on_test <= 100  # one epoch: the same checkpoint
        assert row.code_version == json.loads((repo / "metrics/eval.json").read_text())["code_version"]
        assert "done with this code" in run(sweep, repo).stdout
