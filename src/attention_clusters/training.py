"""Training the Attention Cluster: epochs, validation-based selection, checkpoints, resume.

Per epoch the training set is shuffled with ``default_rng([seed, epoch])`` (so a resumed run
visits batches in the same order as an uninterrupted one), trained with Adam, then evaluated on
the validation split (SPEC 8: the test split is never used for selection). After every epoch the
full training state (weights and Adam moments) and a small JSON are written to the state folder,
so re-running continues after the last completed epoch. The state is only reused when the
settings that shape it (fc, natt, lr, weight_decay, batch_size, seed, world size, the features)
are unchanged; ``epochs`` may grow to continue a finished run.

The state is committed as one unit: checkpoints are written under new names (``last-<epoch>``,
``best-<epoch>``) and ``state.json``, which names them, is replaced last; a process killed in
between resumes from the previous epoch's consistent state. The DVCLive outputs are written
from the committed history only (:class:`LiveLog`), so they are complete after a resume and
untouched by a run that fails before committing an epoch.
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn

from . import evaluation
from .batching import predict, run_epoch
from .errors import UserError
from .models.attention_cluster import NUM_CLASSES, AttentionCluster
from .storage import atomic_path, load_npy, read_json, reserve, write_json

STATE_JSON = "state.json"
CHECKPOINTS = ("last", "best")  # state["last"], state["best"]: checkpoint file names in the state folder
EVAL_BATCH = 1024


def build_model(fc, natt, feature_dims=(50,)):
    """The Attention Cluster for Flash-MNIST (1,024 classes)."""
    return AttentionCluster(tuple(feature_dims), natt=natt, fc=fc, num_classes=NUM_CLASSES)


def model_config(p, feature_dims):
    """What a checkpoint must be loaded into: written beside it as JSON."""
    return {"fc": p.fc, "natt": p.natt, "feature_dims": list(feature_dims), "num_classes": NUM_CLASSES}


def fingerprint(p, world_size, data_files):
    """Hex digest of everything that makes saved training state reusable.

    Args:
        p: validated params; world_size: number of data-parallel workers.
        data_files: paths of the training inputs; their size and first/last MiB are hashed.
    """
    digest = hashlib.sha256()
    keys = {k: getattr(p, k) for k in ("fc", "natt", "lr", "weight_decay", "batch_size", "seed")}
    digest.update(json.dumps({**keys, "world_size": world_size}, sort_keys=True).encode())
    for path in data_files:
        size = Path(path).stat().st_size
        with open(path, "rb") as handle:
            digest.update(str(size).encode() + handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read())
    return digest.hexdigest()


def check_width(x, features_path, width):
    """Refuse features (N, L, F) whose width F is not the ``width`` the model takes.

    Raises:
        UserError: naming the file, the width found and the width expected.
    """
    if width is not None and x.shape[-1] != width:
        raise UserError(f"{features_path}: features are {x.shape[-1]} wide, the model expects {width}; re-run the feature stage: dvc repro feature")


def load_split(features_path, labels_path, width=None):
    """Features and labels of one Flash-MNIST split, checked against each other.

    Args:
        width: if given, the feature width F the model takes (see :func:`check_width`).

    Returns:
        ``(x, y)``: float32 (N, L, F) and int (N,) labels in 0..1023.

    Raises:
        UserError: naming the file, for a wrong ndim, dtype or width, disagreeing N, or bad labels.
    """
    x = load_npy(features_path, ndim=3)
    y = load_npy(labels_path, ndim=1)
    check_width(x, features_path, width)
    if x.dtype != np.float32 or len(x) != len(y) or len(y) == 0:
        raise UserError(f"{features_path}: expected float32 (N, L, F) features for the {len(y)} labels of {labels_path}, got {x.dtype} {x.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise UserError(f"{labels_path}: labels must be integers in 0..{NUM_CLASSES - 1}")
    return x, y


def load_state(state_dir, fp, epochs):
    """The saved training state in ``state_dir`` if it can continue to ``epochs``, else a fresh one.

    Saved state is reused when its fingerprint is ``fp``, the checkpoints it names exist and
    it has not gone past ``epochs`` (a run asked for fewer epochs than were done starts over).

    Returns:
        dict with ``fingerprint``, ``epoch`` (last completed, 0 when fresh), ``best_epoch``,
        ``best_val_top1``, ``history`` (one record per epoch) and, once an epoch is committed,
        ``last`` and ``best`` (checkpoint file names in ``state_dir``).
    """
    state_dir = Path(state_dir)
    if (state_dir / STATE_JSON).is_file():
        try:
            state = json.loads((state_dir / STATE_JSON).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            state = None
        if (
            isinstance(state, dict) and state.get("fingerprint") == fp and 0 < state.get("epoch", 0) <= epochs
            and all(isinstance(state.get(key), str) and (state_dir / state[key]).is_file() for key in CHECKPOINTS)
        ):
            return state
    return {"fingerprint": fp, "epoch": 0, "best_epoch": 0, "best_val_top1": -1.0, "history": []}


def save_checkpoint(cell, path):
    """``mindspore.save_checkpoint`` of ``cell``'s parameters, written atomically.

    Its size is reserved on disk first, so a full disk or read-only folder is one
    :class:`UserError` line before MindSpore writes anything.
    """
    size = sum(param.data.nbytes for param in cell.get_parameters())
    with atomic_path(path, size) as tmp:
        reserve(tmp.with_suffix(".tmp"), size)  # where MindSpore writes before renaming to tmp
        ms.save_checkpoint(cell, str(tmp))


def load_weights(cell, path):
    """Load a checkpoint into ``cell``; every parameter of ``cell`` must be found.

    Raises:
        UserError: the file is missing or does not match the network's parameters.
    """
    if not Path(path).is_file():
        raise UserError(f"{path}: checkpoint not found (run the training stage first)")
    try:
        missing, _ = ms.load_param_into_net(cell, ms.load_checkpoint(str(path)), strict_load=True)
    except (ValueError, RuntimeError, TypeError) as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise UserError(f"{path}: unreadable or mismatched checkpoint ({reason})") from None
    if missing:
        raise UserError(f"{path}: checkpoint lacks {len(missing)} parameters of this network, e.g. {missing[0]}")


def _eta(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
    """Trains one Attention Cluster configuration with validation-based model selection.

    Args:
        p: validated params (fc, natt, lr, weight_decay, batch_size, epochs, seed).
        train_x: float32 (N, 25, 50) features (memory map is fine); train_y: int (N,) labels.
        val_x, val_y: the validation split, same layout.
        state_dir: folder for resumable state (last and best checkpoints, state.json).
        rank, world_size: this worker's data-parallel rank and the number of workers; each
            rank trains on its shard ``order[rank::world_size]`` of every epoch's shuffle.
        live: optional :class:`live_log.LiveLog` (rank 0 only): each epoch's record is logged
            to it, and committed with the training state.
        log: callable taking one line of text per epoch (rank 0 only).
    """

    def __init__(self, p, train_x, train_y, val_x, val_y, state_dir, rank=0, world_size=1, live=None, log=print):
        self.p, self.rank, self.world_size = p, rank, world_size
        self.train_x, self.train_y, self.val_x, self.val_y = train_x, train_y, val_x, val_y
        self.state_dir, self.live, self.log = Path(state_dir), live, log
        shard = len(train_y) // world_size
        if shard < p.batch_size:
            raise UserError(
                f"params.yaml: batch_size {p.batch_size} is larger than the {shard} training videos per worker; "
                "lower batch_size (or distributed.workers)"
            )
        self.net = build_model(p.fc, p.natt, (train_x.shape[2],))
        loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        optimizer = nn.Adam(self.net.trainable_params(), learning_rate=p.lr, weight_decay=p.weight_decay)
        self.step = nn.TrainOneStepCell(nn.WithLossCell(self.net, loss), optimizer)

    def fit(self, state):
        """Train from ``state`` (see :func:`load_state`) up to p.epochs; returns the final state."""
        if state["epoch"] > 0:
            load_weights(self.step, self.state_dir / state["last"])
            self.log(f"resuming after epoch {state['epoch']} (best val top-1 {state['best_val_top1']:.2f} % at epoch {state['best_epoch']})")
        started, first = time.perf_counter(), state["epoch"] + 1
        for epoch in range(first, self.p.epochs + 1):
            record = self._epoch(epoch)
            state["history"].append(record)
            state["epoch"] = epoch
            improved = record["val_top1"] > state["best_val_top1"]
            if improved:
                state["best_epoch"], state["best_val_top1"] = epoch, record["val_top1"]
            self._save(state, improved)
            remaining = (time.perf_counter() - started) / (epoch - first + 1) * (self.p.epochs - epoch)
            self.log(
                f"epoch {epoch}/{self.p.epochs}  loss {record['train_loss']:.4f}  val top-1 {record['val_top1']:.2f} %"
                f"  top-5 {record['val_top5']:.2f} %  {record['epoch_time_s']:.1f} s ({record['samples_per_s']:,.0f} samples/s)"
                f"  best {state['best_val_top1']:.2f} % @ {state['best_epoch']}  ETA {_eta(remaining)}"
            )
        return state

    def _epoch(self, epoch):
        order = np.random.default_rng([self.p.seed, epoch]).permutation(len(self.train_y))[self.rank :: self.world_size]
        start = time.perf_counter()
        self.step.set_train(True)
        loss = run_epoch(self.step, self.train_x, self.train_y, self.p.batch_size, order)
        seconds = time.perf_counter() - start
        logits = predict(self.net, self.val_x, EVAL_BATCH)
        record = {
            "epoch": epoch,
            "train_loss": round(loss, 6),
            "val_top1": round(evaluation.accuracy(logits, self.val_y, 1), 4),
            "val_top5": round(evaluation.accuracy(logits, self.val_y, 5), 4),
            "epoch_time_s": round(seconds, 3),
            "samples_per_s": round(len(order) // self.p.batch_size * self.p.batch_size * self.world_size / seconds, 1),
        }
        if self.live is not None:
            self.live.log(record)
        return record

    def _save(self, state, improved):
        """Commit the state of the epoch just done: new checkpoints first, then state.json names them."""
        if self.rank != 0:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state["last"] = f"last-{state['epoch']:05d}.ckpt"
        save_checkpoint(self.step, self.state_dir / state["last"])
        if improved:
            state["best"] = f"best-{state['epoch']:05d}.ckpt"
            save_checkpoint(self.net, self.state_dir / state["best"])
        write_json(self.state_dir / STATE_JSON, state)
        for old in self.state_dir.glob("*.ckpt"):
            if old.name not in (state["last"], state["best"]):
                old.unlink()
        if self.live is not None:
            self.live.commit()


def publish(state_dir, model_path, config, state):
    """Copy the best checkpoint to ``model_path`` and write its config JSON beside it.

    The JSON (``<model_path>.json`` with suffix replaced) holds fc, natt, feature_dims,
    num_classes and the selected epoch; loaders check it before building the network.
    """
    with atomic_path(model_path) as tmp:
        shutil.copyfile(Path(state_dir) / state["best"], tmp)
    info = dict(config, best_epoch=state["best_epoch"], best_val_top1=state["best_val_top1"], epochs=state["epoch"])
    write_json(Path(model_path).with_suffix(".json"), info)


def load_model(model_path, expect=None):
    """Build the network described by ``<model_path>.json`` and load the checkpoint into it.

    Args:
        expect: optional dict of config values (e.g. ``{"fc": 1, "natt": 8}``) that must match.

    Returns:
        ``(net, config)``.

    Raises:
        UserError: the JSON or checkpoint is missing, or the config disagrees with ``expect``.
    """
    config_path = Path(model_path).with_suffix(".json")
    config = read_json(config_path)
    keys = ("fc", "natt", "feature_dims", "num_classes")
    if not isinstance(config, dict) or not all(key in config for key in keys):
        raise UserError(f"{config_path}: expected a JSON object with {', '.join(keys)} (re-run training)")
    for key, value in (expect or {}).items():
        if config.get(key) != value:
            raise UserError(f"{model_path}: trained with {key}={config.get(key)}, but params.yaml says {key}={value}; re-run training")
    net = build_model(config["fc"], config["natt"], config["feature_dims"])
    load_weights(net, model_path)
    return net, config
