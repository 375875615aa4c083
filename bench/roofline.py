"""How far each figure of bench/speed.py is from this host's limits: FLOPs, Adam bytes, kernels.

* :func:`train_flops`: training FLOPs per sample (or frame) of our networks, counted from their
  layer shapes: 2 FLOPs a multiply-add, and training as 3x the forward's products (the forward
  and the two backward products, for the input and the weight gradient), the usual estimate.
  Element-wise work (softmax, normalisation, pooling, Adam) is left out: it is small next to
  the products.
* :func:`parameters`: trainable parameters, for the Adam state touched per step.
* :func:`kernels`: the CPU kernels a training step launches and the busiest ones, from
  MindSpore's own profiler over one profiled call of the work.
* :func:`matmul_rate`: this host's large-matmul FLOP/s in MindSpore, the roof.
"""

import glob
import tempfile

import numpy as np
from timing import median_rate

FEATURES, FRAMES, HIDDEN, CLASSES = 50, 25, 128, 1024  # SPEC 6: F, L, the fc=2 hidden width, classes
NOISY_CLASSES = 11  # SPEC 5: digits and "no digit"
EXTRACTOR_LAYERS = (
    (24 * 24, 25, 10),
    (8 * 8, 250, 20),
    (1, 320, 50),
    (1, 50, NOISY_CLASSES),
)  # (outputs, fan-in, units)


def forward_macs(figure):
    """Multiply-adds of one sample's (or frame's) forward pass of figure ``ac_FC_NATT`` or
    ``extractor_train``."""
    if figure == "extractor_train":
        return sum(outputs * fan_in * units for outputs, fan_in, units in EXTRACTOR_LAYERS)
    fc, natt = (int(v) for v in figure.split("_")[1:])
    score = FEATURES * natt if fc == 1 else FEATURES * HIDDEN + HIDDEN * natt
    return FRAMES * score + natt * FRAMES * FEATURES + natt * FEATURES * CLASSES  # scores, a x, classifier


def train_flops(figure):
    """Training FLOPs per sample: 3 x 2 x :func:`forward_macs`."""
    return 6 * forward_macs(figure)


def parameters(figure):
    """Trainable parameters of figure ``ac_FC_NATT`` or ``extractor_train`` (weights and biases)."""
    if figure == "extractor_train":
        return sum(fan_in * units + units for _, fan_in, units in EXTRACTOR_LAYERS)
    fc, natt = (int(v) for v in figure.split("_")[1:])
    score = FEATURES * natt + natt if fc == 1 else FEATURES * HIDDEN + HIDDEN + HIDDEN * natt + natt
    return score + 2 * natt + natt * FEATURES * CLASSES + CLASSES


def kernels(work, steps):
    """Kernels per step of ``work`` (a callable running ``steps`` training steps, compiled
    already) under ``mindspore.Profiler``: ``{"per_step": kernels a step, "kernel_ms_per_step":
    their summed time a step, "busiest": [[op, count a step, ms a step], ...]}``, the five op
    types with the most time."""
    import pandas as pd
    from mindspore import Profiler

    out = tempfile.mkdtemp(prefix="ac-profile-")
    profiler = Profiler(output_path=out)
    work()
    profiler.stop()
    profiler.analyse()
    ops = pd.read_csv(glob.glob(f"{out}/**/cpu_op_type_info_0.csv", recursive=True)[0])
    ops["per_step"] = ops["type_occurrences"] / steps
    ops["ms_per_step"] = ops["total_compute_time"] / steps
    busiest = ops.sort_values("ms_per_step", ascending=False).head(5)
    return {
        "per_step": round(float(ops["per_step"].sum()), 1),
        "kernel_ms_per_step": round(float(ops["ms_per_step"].sum()), 3),
        "busiest": [[row.op_type, round(row.per_step, 1), round(row.ms_per_step, 3)] for row in busiest.itertuples()],
    }


def matmul_rate(seconds, n=1024):
    """FLOP/s of an (n x n) @ (n x n) float32 ``ops.matmul`` in MindSpore on this host (median of
    three blocks of at least ``seconds``)."""
    import mindspore as ms
    from mindspore import ops

    a = ms.Tensor(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    ops.matmul(a, a).asnumpy()
    return median_rate(lambda: ops.matmul(a, a).asnumpy(), 2 * n**3, seconds)


def line(figure, rate, profile, roof, batch):
    """One roofline line of figure ``figure`` at ``rate`` samples/s with its kernel ``profile``
    (:func:`kernels`), the host's large-matmul FLOP/s ``roof`` and ``batch`` samples a step."""
    flops = train_flops(figure)
    adam = 28 * parameters(figure)  # bytes a step: w, g, m, v read and w, m, v written
    busiest = ", ".join(f"{op} x{count:g} {ms:.3f} ms" for op, count, ms in profile["busiest"])
    return (
        f"{figure}: {flops / 1e6:.2f} MFLOP/sample, Adam state "
        f"{adam / 1e6:.2f} MB/step ({adam / batch / 1e3:.1f} kB/sample), "
        f"{profile['per_step']:g} kernels/step taking {profile['kernel_ms_per_step']:.3f} ms, "
        f"{flops * rate / 1e9:.1f} GFLOP/s = {flops * rate / roof:.1%} of the large-matmul rate; busiest: {busiest}"
    )
