"""Training the Attention Cluster: epochs, validation-based selection, checkpoints, resume.

Per epoch the training set is shuffled with ``default_rng([seed, epoch])`` (so a resumed run
visits batches in the same order as an uninterrupted one), trained with Adam, then evaluated on
the validation split (SPEC 8: the test split is never used for selection). After every epoch the
full training state (weights and Adam moments) and a small JSON are written to the state folder,
so re-running continues after the last completed epoch. The state is only reused when
the stage's inputs are unchanged (:func:`fingerprint`: its code, data and params as dvc.yaml
declares them, and the world size); ``epochs`` may grow to continue a finished run (except under
the cosine schedule, which depends on it).

Loss (``loss_reduction``): ``sum`` differentiates the sum of the batch's per-sample
cross-entropies, as the ModelZoo's train.py does (``nn.SoftmaxCrossEntropyWithLogits(sparse=True)``
has ``reduction='none'``, and ``TrainOneStepCell`` back-propagates a vector of ones through it);
``mean`` differentiates their mean. Adam's step does not depend on the gradient's scale (up to
its eps), but its L2 weight decay does: under ``mean`` a weight decay acts batch_size times as
strongly as the same figure in the ModelZoo. The logged ``train_loss`` is the per-sample mean
either way.

Optimiser (``optimizer``): ``adam`` is MindSpore's ``nn.Adam`` with its L2 weight decay on every
parameter (the gradient gets ``weight_decay * w`` added before the moments), as the ModelZoo's
train.py builds it; ``adamw`` decouples the decay from the moments (Loshchilov & Hutter,
"Decoupled Weight Decay Regularization", ICLR 2019): ``w <- w * (1 - lr_t * weight_decay)``, then
the Adam step on the bare gradient. Learning rate (``lr_schedule``, ``warmup_epochs``): see
:func:`lr_values`. Early stopping (``patience``): see :meth:`Trainer.fit`.

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
from mindspore import nn, ops

from . import evaluation, inputs, recovery
from .batching import predict, run_epoch
from .checkpoints import load_weights, save_checkpoint
from .errors import UserError
from .models.attention_cluster import NUM_CLASSES, AttentionCluster
from .storage import atomic_path, load_npy, read_json, write_json

STATE_JSON = "state.json"
CHECKPOINTS = ("last", "best")  # state["last"], state["best"]: checkpoint file names in the state folder
EVAL_BATCH = 1024


def build_model(fc, natt, feature_dims=(50,)):
    """The Attention Cluster for Flash-MNIST (1,024 classes)."""
    return AttentionCluster(tuple(feature_dims), natt=natt, fc=fc, num_classes=NUM_CLASSES)


def model_config(p, feature_dims):
    """What a checkpoint must be loaded into: written beside it as JSON."""
    return {"fc": p.fc, "natt": p.natt, "feature_dims": list(feature_dims), "num_classes": NUM_CLASSES}


def fingerprint(p, world_size, stage="train"):
    """Hex digest of everything that makes saved training state reusable: the stage's inputs.

    That is every dep of ``stage`` in dvc.yaml, read in full (its code, which tests/test_deps.py
    keeps equal to the script's import closure, and its data), the values of the params it
    declares, and the world size. ``epochs`` is left out so that raising it continues a finished
    run, except under the cosine schedule, whose every step depends on it. State made by other
    code, params or data is therefore never resumed.

    Args:
        p: validated params; world_size: number of data-parallel workers.

    Raises:
        UserError: dvc.yaml or a dep cannot be read.
    """
    values = {key: _get(p, key) for key in inputs.params(stage) if key != "epochs" or p.lr_schedule == "cosine"}
    settings = json.dumps({"params": values, "world_size": world_size}, sort_keys=True)
    return hashlib.sha256((settings + inputs.digest(inputs.deps(stage))).encode()).hexdigest()


def _get(p, key):
    """The value of dotted params key ``key`` (e.g. ``distributed.workers``) in namespace ``p``."""
    for part in key.split("."):
        p = getattr(p, part)
    return p


def check_width(x, features_path, width):
    """Refuse features (N, L, F) whose width F is not the ``width`` the model takes.

    Raises:
        UserError: naming the file, the width found and the width expected.
    """
    if width is not None and x.shape[-1] != width:
        raise UserError(f"{features_path}: features are {x.shape[-1]} wide, the model expects {width}; re-run the feature stage: dvc repro feature")


def lr_values(p, steps_per_epoch):
    """The learning rate of every optimiser step, or None for a constant ``p.lr`` (the ModelZoo's).

    With T = ``p.epochs * steps_per_epoch`` steps, W = ``p.warmup_epochs * steps_per_epoch``
    warm-up steps and step s = 0..T-1:

    * warm-up (s < W): ``lr * (s + 1) / W``, linear (Goyal et al. 2017, "Accurate, Large
      Minibatch SGD", section 2.2);
    * then ``constant``: ``lr``; ``cosine``: ``lr * (1 + cos(pi * (s - W) / (T - W))) / 2``,
      from lr towards 0 at the end of the run (Loshchilov & Hutter 2017, SGDR, eq. 5 with
      eta_min = 0 and one cycle).

    Returns:
        float32 (T,) or None (constant, no warm-up).

    Raises:
        UserError: warmup_epochs is not smaller than epochs.
    """
    if p.lr_schedule == "constant" and p.warmup_epochs == 0:
        return None
    if p.warmup_epochs >= p.epochs:
        raise UserError(f"params.yaml: warmup_epochs ({p.warmup_epochs}) must be smaller than epochs ({p.epochs})")
    total, warm = p.epochs * steps_per_epoch, p.warmup_epochs * steps_per_epoch
    step = np.arange(total, dtype=np.float64)
    scale = np.ones(total)
    if p.lr_schedule == "cosine":
        scale = (1 + np.cos(np.pi * (step - warm) / (total - warm))) / 2
    if warm:
        scale[:warm] = (step[:warm] + 1) / warm
    return (p.lr * scale).astype(np.float32)


class DecoupledDecayStep(nn.TrainOneStepCell):
    """One training step with decoupled weight decay (AdamW) around an optimiser without decay.

    Per step t: gradients g of the loss at w; then ``w <- w * (1 - lr_t * weight_decay)`` for every
    parameter the optimiser updates; then the optimiser's step with g. ``lr_t`` is
    ``lr_per_step[t]`` (the last value beyond the end), t the optimiser's ``global_step``, which
    the checkpoint keeps, so a resumed run decays as an uninterrupted one.

    Args:
        network: a cell returning the loss; optimizer: e.g. ``nn.Adam`` with weight_decay 0.
        lr_per_step: float sequence, the optimiser's learning rate of each step (length >= 1).
        weight_decay: lambda >= 0.
    """

    def __init__(self, network, optimizer, lr_per_step, weight_decay):
        super().__init__(network, optimizer)
        self.lr_per_step = ms.Tensor(np.asarray(lr_per_step, dtype=np.float32))
        self.last_step = ms.Tensor(len(lr_per_step) - 1, ms.int32)
        self.weight_decay = float(weight_decay)

    def construct(self, *inputs):
        loss = self.network(*inputs)
        grads = self.grad_reducer(self.grad_no_sens(self.network, self.weights)(*inputs))
        step = ops.minimum(self.optimizer.global_step, self.last_step)
        keep = 1 - ops.gather(self.lr_per_step, step, 0) * self.weight_decay
        for weight in self.weights:
            ops.assign(weight, weight * keep)
        return ops.depend(loss, self.optimizer(grads))


def build_train_step(net_with_loss, p, steps_per_epoch):
    """The training step cell for ``p.optimizer``, ``p.lr`` (and its schedule) and ``p.weight_decay``.

    ``adam`` (or no decay): ``nn.TrainOneStepCell`` with ``nn.Adam(weight_decay=...)``, L2 added to
    the gradient of every trainable parameter (the ModelZoo's); ``adamw``:
    :class:`DecoupledDecayStep` around ``nn.Adam`` without decay.
    """
    params = net_with_loss.trainable_params()
    schedule = lr_values(p, steps_per_epoch)
    lr = p.lr if schedule is None else ms.Tensor(schedule)
    if p.optimizer == "adam" or p.weight_decay == 0:
        return nn.TrainOneStepCell(net_with_loss, nn.Adam(params, learning_rate=lr, weight_decay=p.weight_decay))
    per_step = [p.lr] if schedule is None else schedule
    return DecoupledDecayStep(net_with_loss, nn.Adam(params, learning_rate=lr), per_step, p.weight_decay)


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
        ms.set_seed(p.seed)  # the initial weights and dropout masks depend on the seed alone
        self.net = build_model(p.fc, p.natt, (train_x.shape[2],))
        loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction=p.loss_reduction)
        steps_per_epoch = len(range(rank, len(train_y), world_size)) // p.batch_size
        self.step = build_train_step(nn.WithLossCell(self.net, loss), p, steps_per_epoch)

    def fit(self, state):
        """Train from ``state`` (see :func:`load_state`) up to p.epochs; returns the final state.

        With ``p.patience`` > 0, training stops early once ``patience`` epochs in a row have not
        beaten the best validation top-1 (0: all p.epochs, as the ModelZoo).
        """
        if state["epoch"] > 0:
            load_weights(self.step, self.state_dir / state["last"])
            self.log(f"resuming after epoch {state['epoch']} (best val top-1 {state['best_val_top1']:.2f} % at epoch {state['best_epoch']})")
        started, first = time.perf_counter(), state["epoch"] + 1
        for epoch in range(first, self.p.epochs + 1):
            if self.p.patience and epoch - 1 - state["best_epoch"] >= self.p.patience:
                self.log(f"stopping early after epoch {epoch - 1}: no better val top-1 for {self.p.patience} epochs")
                break
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
        loss = loss / self.p.batch_size if self.p.loss_reduction == "sum" else loss  # per-sample mean
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
    num_classes, the selected epoch, the epochs run and ``train_minutes`` (training time without
    validation); loaders check it before building the network.
    """
    with atomic_path(model_path) as tmp:
        shutil.copyfile(Path(state_dir) / state["best"], tmp)
    info = dict(config, best_epoch=state["best_epoch"], best_val_top1=state["best_val_top1"], epochs=state["epoch"])
    info["train_minutes"] = round(sum(h["epoch_time_s"] for h in state["history"]) / 60, 3)  # excl. validation
    write_json(Path(model_path).with_suffix(".json"), info)


def load_model(model_path, expect=None):
    """Build the network described by ``<model_path>.json`` and load the checkpoint into it.

    Args:
        expect: optional dict of config values (e.g. ``{"fc": 1, "natt": 8}``) that must match.

    Returns:
        ``(net, config)``.

    Raises:
        UserError: the JSON or checkpoint is missing, the config disagrees with ``expect``, or
        the checkpoint does not fit the network the JSON describes.
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
    network = f"the network of {config_path} (fc={config['fc']}, natt={config['natt']})"
    load_weights(net, model_path, network, lambda: f"the two files are from different runs; for {config_path}: {recovery.file_hint(config_path)}")
    return net, config
