"""Training the Attention Cluster: epochs, validation-based selection, early stopping, resume.

Per epoch the training set is shuffled with ``default_rng([seed, epoch])`` (so a resumed run
visits batches in the same order as an uninterrupted one) and each step's dropout mask comes
from (seed, epoch, rank, step) (:class:`train_step.DropoutMasks`); the epoch is trained
(:mod:`train_step`), then evaluated on the validation split (SPEC 8: the test split is never
used for selection) and committed (:mod:`resume`). The logged ``train_loss`` is the per-sample
mean whatever ``loss_reduction``. The DVCLive outputs are written from the committed history
only (:class:`LiveLog`), so they are complete after a resume and untouched by a run that fails
before committing an epoch.
"""

import time
from pathlib import Path

import mindspore as ms
import numpy as np

from . import evaluation, resume
from .batching import predict, run_epoch
from .checkpoints import load_weights
from .errors import UserError
from .train_step import DropoutMasks, MaskedCrossEntropy, build_train_step
from .trained_model import EVAL_BATCH, build_model


def _eta(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
    """Trains one Attention Cluster configuration with validation-based model selection.

    Args:
        p: validated params (fc, natt, lr, weight_decay, batch_size, epochs, seed, ...).
        train_x: float32 (N, 25, 50) features (memory map is fine); train_y: int (N,) labels.
        val_x, val_y: the validation split, same layout.
        state_dir: folder for resumable state (last and best checkpoints, state.json).
        rank, world_size: this worker's data-parallel rank and the number of workers; each
            rank trains on its shard ``order[rank::world_size]`` of every epoch's shuffle,
            cut to a multiple of world_size so every rank runs the same number of steps.
        live: optional :class:`live_log.LiveLog` (rank 0 only): each epoch's record is logged
            to it, and committed with the training state.
        log: callable taking one line of text per epoch (rank 0 only).
        test: optional ``(test_x, test_y)``: the test split's top-1 is then also computed after
            every epoch and logged as ``test_top1``, the ModelZoo's protocol (its train.py
            evaluates the test split each epoch); it is reported only, never used for selection.
        fused: optional :class:`fused_ops.FusedOps`: the training step (and validation) then runs
            its fused CPU kernels (:func:`fused_ops.load`); None: MindSpore's own.

    Raises:
        UserError: batch_size is larger than a worker's share of the training set.
    """

    def __init__(
        self,
        p,
        train_x,
        train_y,
        val_x,
        val_y,
        state_dir,
        rank=0,
        world_size=1,
        live=None,
        log=print,
        test=None,
        fused=None,
    ):
        self.p, self.rank, self.world_size = p, rank, world_size
        self.train_x, self.train_y, self.val_x, self.val_y = train_x, train_y, val_x, val_y
        self.state_dir, self.live, self.log, self.test = Path(state_dir), live, log, test
        self.shard = len(train_y) // world_size  # the same for every rank: equal steps per epoch
        if self.shard < p.batch_size:
            raise UserError(
                f"params.yaml: batch_size {p.batch_size} is larger than the {self.shard} training videos per worker; "
                "lower batch_size (or distributed.workers)"
            )
        ms.set_seed(p.seed)  # the initial weights depend on the seed alone
        self.net = build_model(p.fc, p.natt, (train_x.shape[2],), fused)
        loss = MaskedCrossEntropy(self.net, p.loss_reduction, fused and fused.softmax_nll)
        self.step = build_train_step(loss, p, self.shard // p.batch_size)

    def fit(self, state):
        """Train from ``state`` (see :func:`resume.load_state`) up to p.epochs; returns the final state.

        With ``p.patience`` > 0, training stops early once ``patience`` epochs in a row have not
        beaten the best validation top-1 (0: all p.epochs, as the ModelZoo).
        """
        if state["epoch"] > 0:
            load_weights(self.step, self.state_dir / state["last"])
            self.log(
                f"resuming after epoch {state['epoch']} (best val top-1 "
                f"{state['best_val_top1']:.2f} % at epoch {state['best_epoch']})"
            )
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
            if self.rank == 0:
                resume.commit(self.state_dir, state, self.step, self.net, improved)
                if self.live is not None:
                    self.live.commit()
            remaining = (time.perf_counter() - started) / (epoch - first + 1) * (self.p.epochs - epoch)
            self.log(
                f"epoch {epoch}/{self.p.epochs}  loss {record['train_loss']:.4f}  val top-1 {record['val_top1']:.2f} %"
                f"  top-5 {record['val_top5']:.2f} %  {record['epoch_time_s']:.1f} "
                f"s ({record['samples_per_s']:,.0f} samples/s)"
                f"  best {state['best_val_top1']:.2f} % @ {state['best_epoch']}  ETA {_eta(remaining)}"
            )
        return state

    def train_epoch(self, epoch):
        """Run the optimiser steps of ``epoch`` (1-based) on this rank's shard.

        Returns:
            ``(loss, samples)``: the per-sample mean training loss (float) and the number of
            samples trained on this rank.
        """
        shuffled = np.random.default_rng([self.p.seed, epoch]).permutation(len(self.train_y))
        order = shuffled[: self.shard * self.world_size][self.rank :: self.world_size]
        masks = DropoutMasks(self.net.dropout, self.p.seed, epoch, self.rank, self.p.batch_size, self.net.width)
        self.step.set_train(True)
        loss = run_epoch(self.step, self.train_x, self.train_y, self.p.batch_size, order, extra=lambda: (masks(),))
        loss = loss / self.p.batch_size if self.p.loss_reduction == "sum" else loss
        return loss, len(order) // self.p.batch_size * self.p.batch_size

    def _epoch(self, epoch):
        start = time.perf_counter()
        loss, samples = self.train_epoch(epoch)
        seconds = time.perf_counter() - start
        logits = predict(self.net, self.val_x, EVAL_BATCH)
        record = {
            "epoch": epoch,
            "train_loss": round(loss, 6),
            "val_top1": round(evaluation.accuracy(logits, self.val_y, 1), 4),
            "val_top5": round(evaluation.accuracy(logits, self.val_y, 5), 4),
            "epoch_time_s": round(seconds, 3),
            "samples_per_s": round(samples * self.world_size / seconds, 1),
        }
        if self.test is not None:
            record["test_top1"] = round(
                evaluation.accuracy(predict(self.net, self.test[0], EVAL_BATCH), self.test[1], 1), 4
            )
        if self.live is not None:
            self.live.log(record)
        return record
