"""Feeding numpy arrays (possibly memory-mapped) through MindSpore networks in batches."""

import mindspore as ms
import numpy as np


def _tensor(array):
    return ms.Tensor(np.ascontiguousarray(array))


def run_epoch(train_step, inputs, labels, batch_size, order, progress=None, extra=tuple):
    """One pass of ``train_step`` over the samples in ``order``; returns the mean loss (float).

    Args:
        train_step: a ``nn.TrainOneStepCell`` (or any Cell) taking ``(x, y, *extra())`` and
            returning the loss.
        inputs: array (N, ...); labels: int array (N,).
        order: int (M,) sample indices in the order to visit. Only full batches are run (the
            last M mod batch_size samples are skipped; with a fresh shuffle each epoch every
            sample is still seen), so the graph compiles for one shape.
        progress: optional callable taking the number of samples just done.
        extra: callable returning the step's further inputs as a tuple of numpy arrays (e.g.
            its dropout mask), called once per step in order.
    """
    losses = []
    for lo in range(0, len(order) - batch_size + 1, batch_size):
        idx = np.sort(order[lo : lo + batch_size])  # sorted reads are faster on memory maps
        more = (_tensor(a) for a in extra())
        losses.append(float(train_step(_tensor(inputs[idx]), _tensor(labels[idx].astype(np.int32)), *more).asnumpy()))
        if progress is not None:
            progress(batch_size)
    return float(np.mean(losses)) if losses else float("nan")


def predict(net, inputs, batch_size, out=None, progress=None):
    """Outputs of ``net`` (in eval mode) for every sample of ``inputs``, in order.

    The last batch is padded to ``batch_size`` (so one graph serves all batches) and the padding
    dropped from the result: every sample counts, none is computed twice.

    Args:
        inputs: array (N, ...); out: optional preallocated array (N, K) to fill (e.g. a memory
            map); progress: as in :func:`run_epoch`.

    Returns:
        float32 (N, K) (``out`` when given).
    """
    net.set_train(False)
    n, lo = len(inputs), 0
    for x, real in padded_batches(inputs, batch_size):
        y = net(_tensor(x)).asnumpy()[:real]
        if out is None:
            out = np.empty((n,) + y.shape[1:], dtype=np.float32)
        out[lo : lo + real] = y
        lo += real
        if progress is not None:
            progress(real)
    return out


def padded_batches(inputs, batch_size):
    """Yield ``(batch, real)`` over ``inputs`` (N, ...) in order, every batch ``batch_size`` rows.

    The last batch is zero-padded: its first ``real`` rows are samples, the rest zeros of the
    inputs' dtype. Nothing is yielded for N = 0.
    """
    for lo in range(0, len(inputs), batch_size):
        x = np.asarray(inputs[lo : lo + batch_size])
        real = len(x)
        if real < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - real,) + x.shape[1:], x.dtype)])
        yield x, real
