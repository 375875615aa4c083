"""Training loop: validation selection, checkpoints, resume after an interruption."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
import yaml
from conftest import ROOT

import attention_clusters
from attention_clusters import checkpoints, device, inputs, resume, splits, trained_model, training
from attention_clusters.errors import UserError

device.init("CPU", seed=0)


def toy_data(n, seed):
    """Videos whose label (0..7) is written into the first 8 features of every frame."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 25, 50)).astype(np.float32)
    y = rng.integers(0, 8, n)
    x[np.arange(n), :, y] += 1.0
    return x, y


def settings(epochs, **kw):
    base = {"fc": 1, "natt": 2, "lr": 3e-2, "weight_decay": 0.0, "batch_size": 32, "epochs": epochs, "seed": 1}
    base.update(
        loss_reduction="sum", optimizer="adam", lr_schedule="constant", warmup_epochs=0, patience=0, report_test=False
    )
    base.update(device_target="CPU", distributed=SimpleNamespace(workers=1, nodes=1))
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture
def train_stage(tmp_path, monkeypatch):
    """A scratch folder (the cwd) whose dvc.yaml has a train stage with the real stage's params and
    two deps, code.py and x.npy; returns the folder."""
    (tmp_path / "code.py").write_text("DROPOUT = 0.5\n")
    np.save(tmp_path / "x.npy", toy_data(8, 0)[0])
    spec = {"cmd": "true", "deps": ["code.py", "x.npy"], "params": inputs.params("train", ROOT / "dvc.yaml")}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": spec}}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def trainer(p, state_dir, live=None):
    x, y = toy_data(1024, 0)
    vx, vy = toy_data(256, 1)
    return training.Trainer(p, x, y, vx, vy, state_dir, live=live, log=lambda line: None)


def fit(p, state_dir, live=None):
    return trainer(p, state_dir, live).fit(resume.load_state(state_dir, "fp", p.epochs))


def params_of(net):
    return {q.name: q.asnumpy().copy() for q in net.get_parameters()}


def test_learns_and_keeps_best_epoch(tmp_path):
    state = fit(settings(4), tmp_path)
    assert state["epoch"] == 4 and [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    best = max(state["history"], key=lambda h: h["val_top1"])
    assert state["best_epoch"] == best["epoch"] and state["best_val_top1"] == best["val_top1"] > 50  # chance: 1/1024
    assert state["history"][-1]["train_loss"] < state["history"][0]["train_loss"]
    saved = json.loads((tmp_path / "state.json").read_text())
    assert (
        saved["epoch"] == 4 and saved["last"] == "last-00004.ckpt" and saved["best"] == f"best-{best['epoch']:05d}.ckpt"
    )
    assert {p.name for p in tmp_path.iterdir()} == {"state.json", saved["last"], saved["best"]}


def test_resume_continues_from_the_saved_weights(tmp_path):
    first = trainer(settings(2), tmp_path)
    state = first.fit(resume.load_state(tmp_path, "fp", 2))
    saved = params_of(first.net)
    again = trainer(settings(2), tmp_path)
    state2 = again.fit(resume.load_state(tmp_path, "fp", 2))  # nothing left to do: only loads
    assert state2["history"] == state["history"]
    for name, value in params_of(again.net).items():
        np.testing.assert_array_equal(value, saved[name])
    longer = fit(settings(3), tmp_path)
    assert [h["epoch"] for h in longer["history"]] == [1, 2, 3]
    assert resume.load_state(tmp_path, "fp", 2)["epoch"] == 0  # fewer epochs than done: start over


class StopAfter:
    """A LiveLog stand-in that interrupts training after `epochs` epochs, like Ctrl-C."""

    def __init__(self, epochs):
        self.left = epochs

    def log(self, record):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt

    def commit(self):
        pass


def without_times(history):
    return [{k: v for k, v in h.items() if k not in ("epoch_time_s", "samples_per_s")} for h in history]


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path):
    """Interrupted during epoch 2 of 3 and resumed: the checkpoints and history of a run that never stopped."""
    straight = fit(settings(3), tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        fit(settings(3), tmp_path / "b", live=StopAfter(1))
    assert resume.load_state(tmp_path / "b", "fp", 3)["epoch"] == 1  # epoch 2 never completed
    resumed = fit(settings(3), tmp_path / "b")
    assert without_times(resumed["history"]) == without_times(straight["history"])
    for name in ("last-00003.ckpt", f"best-{straight['best_epoch']:05d}.ckpt"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name


TRAIN = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from test_training import settings, trainer
from attention_clusters import resume, training
state_dir, seed, kill = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "kill"
run_epoch = training.run_epoch

def killed_in_epoch_2(step, x, y, batch_size, order, extra):
    def masks_then_sigkill(steps=iter(range(len(order)))):
        if next(steps) == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return extra()
    return run_epoch(step, x, y, batch_size, order, extra=masks_then_sigkill)

train_epoch = training.Trainer.train_epoch

def train_epoch_or_die(self, epoch):
    training.run_epoch = killed_in_epoch_2 if kill and epoch == 2 else run_epoch
    return train_epoch(self, epoch)

training.Trainer.train_epoch = train_epoch_or_die
trainer(settings(3, seed=seed), state_dir).fit(resume.load_state(state_dir, "fp", 3))
"""


def test_training_is_bit_reproducible_for_a_seed_also_after_a_kill(tmp_path):
    """Four processes train at once on all cores, as the stage does (one training a process):
    the two with one seed end with the same checkpoints and history, byte for byte; the other
    seed gives other weights; a fourth, SIGKILLed during epoch 2 and resumed by a new process,
    ends with the bytes of the run that never stopped."""
    env = dict(os.environ, PYTHONPATH=str(Path(attention_clusters.__file__).parents[1]))

    def start(name, seed, kill="no"):
        argv = [sys.executable, "-c", TRAIN, str(ROOT / "tests"), str(tmp_path / name), str(seed), kill]
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    procs = [start("a", 1), start("b", 1), start("c", 2), start("d", 1, "kill")]
    for proc in procs:
        errors = proc.communicate(timeout=600)[1]
        assert proc.returncode == (-signal.SIGKILL if proc is procs[-1] else 0), errors[-2000:]
    assert resume.load_state(tmp_path / "d", "fp", 3)["epoch"] == 1  # killed during epoch 2
    resumed = start("d", 1)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]

    def outcome(name):
        state = json.loads((tmp_path / name / "state.json").read_text())
        return without_times(state["history"]), {
            path.name: path.read_bytes() for path in (tmp_path / name).glob("*.ckpt")
        }

    (history, saved), (history_b, saved_b), (_, other) = outcome("a"), outcome("b"), outcome("c")
    assert history == history_b and max(h["val_top1"] for h in history) > 50  # chance: 1/1024
    assert "last-00003.ckpt" in saved and saved == saved_b  # weights and Adam moments
    assert other["last-00003.ckpt"] != saved["last-00003.ckpt"]
    assert outcome("d") == (history, saved)


def test_changed_settings_start_over(tmp_path):
    fit(settings(1), tmp_path)
    assert resume.load_state(tmp_path, "other", 1)["epoch"] == 0
    (tmp_path / "state.json").write_text("[]")
    assert resume.load_state(tmp_path, "fp", 1)["epoch"] == 0


def test_fingerprint_covers_the_stage_code_data_params_and_kernels(train_stage):
    p = settings(1)
    a = resume.fingerprint(p, 1, "fused")
    assert a == resume.fingerprint(settings(5), 1, "fused")  # epochs may grow
    assert a != resume.fingerprint(settings(1, natt=3), 1, "fused")
    assert a != resume.fingerprint(p, 2, "fused")
    assert a != resume.fingerprint(p, 1, "mindspore")  # the kernels agree up to rounding only
    assert a != resume.fingerprint(settings(1, distributed=SimpleNamespace(workers=2, nodes=1)), 1, "fused")
    (train_stage / "code.py").write_text("DROPOUT = 0.2\n")  # any change to the stage's code
    b = resume.fingerprint(p, 1, "fused")
    assert b != a
    np.save(train_stage / "x.npy", toy_data(8, 1)[0])  # or to its data, anywhere in the file
    assert resume.fingerprint(p, 1, "fused") != b


def test_published_model_round_trip(tmp_path):
    t = trainer(settings(1), tmp_path / "state")
    state = t.fit(resume.load_state(tmp_path / "state", "fp", 1))
    trained_model.publish(
        tmp_path / "state", tmp_path / "model.ckpt", trained_model.model_config(settings(1), (50,)), state
    )
    net, config = trained_model.load_model(tmp_path / "model.ckpt", expect={"fc": 1, "natt": 2})
    assert config["best_epoch"] == 1 and config["feature_dims"] == [50]
    x = toy_data(4, 3)[0]
    t.net.set_train(False)
    net.set_train(False)
    np.testing.assert_array_equal(net(ms.Tensor(x)).asnumpy(), t.net(ms.Tensor(x)).asnumpy())


def test_report_test_logs_the_test_top1_of_every_epoch_without_selecting_on_it(tmp_path):
    x, y = toy_data(1024, 0)
    vx, vy = toy_data(256, 1)
    tx, ty = toy_data(128, 2)
    t = training.Trainer(settings(3), x, y, vx, vy, tmp_path / "state", log=lambda line: None, test=(tx, ty))
    state = t.fit(resume.load_state(tmp_path / "state", "fp", 3))
    t.net.set_train(False)
    logits = t.net(ms.Tensor(tx)).asnumpy()
    assert state["history"][-1]["test_top1"] == round(100 * np.mean(logits.argmax(1) == ty), 4)
    best_val = max(state["history"], key=lambda h: h["val_top1"])
    assert state["best_epoch"] == best_val["epoch"]  # selection stays on validation
    trained_model.publish(
        tmp_path / "state", tmp_path / "m.ckpt", trained_model.model_config(settings(3), (50,)), state
    )
    info = json.loads((tmp_path / "m.json").read_text())
    best_test = max(state["history"], key=lambda h: h["test_top1"])
    assert (info["best_test_top1_any_epoch"], info["best_test_epoch"]) == (best_test["test_top1"], best_test["epoch"])


def test_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(UserError, match="batch_size 2048 is larger than the 1024 training videos"):
        trainer(settings(1, batch_size=2048), tmp_path)


def test_bad_inputs_are_named(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 25, 50), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(5, np.uint16))
    with pytest.raises(UserError, match="x.npy: expected float32 .N, L, F. features for the 5 labels"):
        splits.load_split(tmp_path / "x.npy", tmp_path / "y.npy")
    np.save(tmp_path / "y.npy", np.full(4, 1024, np.uint16))
    with pytest.raises(UserError, match="labels must be integers in 0..1023"):
        splits.load_split(tmp_path / "x.npy", tmp_path / "y.npy")
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.ckpt: not a readable MindSpore checkpoint; re-create it with the stage"):
        checkpoints.load_weights(trained_model.build_model(1, 1), tmp_path / "bad.ckpt")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="bad.json: expected a JSON object"):
        trained_model.load_model(tmp_path / "bad.ckpt")


def test_kill_between_checkpoint_and_state_resumes_without_an_extra_epoch(tmp_path, monkeypatch):
    """A process killed after writing epoch 3's checkpoint but before its state.json."""
    write_json = resume.write_json

    def killed_at_epoch_3(path, obj):
        if path.name == "state.json" and obj["epoch"] == 3:
            raise KeyboardInterrupt
        write_json(path, obj)

    monkeypatch.setattr(resume, "write_json", killed_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(settings(3), tmp_path)
    monkeypatch.setattr(resume, "write_json", write_json)
    assert resume.load_state(tmp_path, "fp", 3)["epoch"] == 2
    state = fit(settings(3), tmp_path)
    last = max(tmp_path.glob("last*.ckpt"), key=lambda path: path.stat().st_mtime)
    steps_per_epoch = 1024 // 32
    assert state["epoch"] == 3
    assert int(ms.load_checkpoint(str(last))["global_step"].asnumpy().reshape(-1)[0]) == 3 * steps_per_epoch


def test_live_log_publishes_only_committed_epochs_and_replays_history(tmp_path):
    from attention_clusters.live_log import LiveLog

    out = tmp_path / "dvclive"
    records = [{"epoch": k, "train_loss": 1.0 / k, "val_top1": 10.0 * k} for k in (1, 2, 3)]
    with LiveLog(out, records[:2]) as live:
        assert not out.exists()  # nothing committed yet
        live.commit()
        live.log(records[2])  # logged, not committed: the published files keep two epochs
        assert json.loads((out / "metrics.json").read_text()) == {"train_loss": 0.5, "val_top1": 20.0, "step": 1}
        assert (out / "plots/metrics/val_top1.tsv").read_text().splitlines() == ["step\tval_top1", "0\t10.0", "1\t20.0"]
        live.commit()
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
    assert len((out / "plots/metrics/train_loss.tsv").read_text().splitlines()) == 4
    with LiveLog(out, [dict(r, test_top1=5.0) for r in records]) as live:  # a run with report_test
        live.commit()
    assert (out / "plots/metrics/test_top1.tsv").is_file()
    with LiveLog(out, records) as live:  # then one without: no stale test curve
        live.commit()
    assert sorted(p.name for p in (out / "plots/metrics").iterdir()) == ["train_loss.tsv", "val_top1.tsv"]


def test_checkpoint_of_another_natt_is_one_whole_line_in_our_words(tmp_path, monkeypatch, capfd):
    """models/attention_cluster.json edited to natt=32 beside a natt=1 checkpoint."""
    monkeypatch.chdir(tmp_path)
    outs = {"outs": ["models/m.ckpt", {"models/m.json": {"cache": False}}]}
    (tmp_path / "dvc.yaml").write_text(json.dumps({"stages": {"train": {"cmd": "x", **outs}}}))  # JSON is YAML
    locked = [{"path": "models/m.ckpt"}, {"path": "models/m.json"}]
    (tmp_path / "dvc.lock").write_text(json.dumps({"stages": {"train": {"outs": locked}}}))
    (tmp_path / "models").mkdir()
    checkpoints.save_checkpoint(trained_model.build_model(1, 1), "models/m.ckpt")
    config = {"fc": 1, "natt": 32, "feature_dims": [50], "num_classes": 1024}
    (tmp_path / "models/m.json").write_text(json.dumps(config))
    capfd.readouterr()
    with pytest.raises(UserError) as err:
        trained_model.load_model("models/m.ckpt")
    assert str(err.value) == (
        "models/m.ckpt: parameter clusters.0.shift_w is (1, 1, 1) in the checkpoint but (1, 32, 1) in the network of "
        "models/m.json (fc=1, natt=32); the two files are from different runs; for models/m.json: "
        "restore it: git checkout models/m.json, or re-make it: dvc repro -s train"
    )
    assert "CRITICAL" not in "".join(capfd.readouterr())  # MindSpore never got to log its own message


class CountingStep:
    """Stands in for the training step: records the size of each batch it is given."""

    def __init__(self):
        self.sizes = []

    def set_train(self, mode):
        pass

    def __call__(self, x, *rest):
        self.sizes.append(len(x))
        return ms.Tensor(0.0)


def test_uneven_data_gives_every_rank_the_same_steps(tmp_path):
    """1,000 videos over 3 workers at batch 167: 333 a rank, one step each (not 2, 1, 1)."""
    x, y = toy_data(1000, 0)
    steps = []
    for rank in range(3):
        t = training.Trainer(
            settings(1, batch_size=167), x, y, x[:64], y[:64], tmp_path, rank, 3, log=lambda line: None
        )
        t.step = CountingStep()
        t.train_epoch(1)
        steps.append(t.step.sizes)
    assert steps == [[167], [167], [167]]
