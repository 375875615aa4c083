"""Speed benchmark: prints figures and ratios measured in this run, on this machine.

1. Attention Cluster training steps (samples/s, batch 64) of the batched model against a naive
   implementation of the same formula that loops over the attention units in Python (the
   reference implementations' slow path), at (fc=1, natt=8) and (fc=2, natt=128).
2. The frame extractor: training frames/s (batch 64) and extraction frames/s (eval mode).

Usage: python bench/speed.py [--steps N]
"""

import argparse
import math
import time

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from attention_clusters import device, features
from attention_clusters.models.attention_cluster import NUM_CLASSES, AttentionCluster
from attention_clusters.models.extractor import FrameExtractor, NoisyMnistClassifier

BATCH = 64


class LoopUnit(nn.Cell):
    """One attention unit with its own scorer, as in the per-unit reference code."""

    def __init__(self, feature_dim, fc, natt):
        super().__init__()
        if fc == 1:
            self.score = nn.Dense(feature_dim, 1)
        else:
            self.score = nn.SequentialCell([nn.Dense(feature_dim, 128), nn.Tanh(), nn.Dense(128, 1)])
        std = math.sqrt(1 / math.sqrt(natt))
        self.w = ms.Parameter(ms.Tensor(np.random.normal(0, std, 1).astype(np.float32)))
        self.b = ms.Parameter(ms.Tensor(np.random.normal(0, std, 1).astype(np.float32)))
        self.scale = 1 / math.sqrt(natt)
        self.softmax = nn.Softmax(axis=1)

    def construct(self, x):
        a = self.softmax(self.score(x))  # (N, L, 1)
        o = self.w * (a * x).sum(axis=1) + self.b  # (N, F)
        return o / ops.maximum(ops.sqrt((o * o).sum(axis=-1, keepdims=True)), 1e-12) * self.scale


class LoopAttentionCluster(nn.Cell):
    """Same formula as AttentionCluster, one Python-level unit at a time."""

    def __init__(self, feature_dim, natt, fc):
        super().__init__()
        self.units = nn.CellList([LoopUnit(feature_dim, fc, natt) for _ in range(natt)])
        self.dropout = nn.Dropout(p=0.5)
        self.classifier = nn.Dense(natt * feature_dim, NUM_CLASSES)

    def construct(self, x):
        outs = []
        for unit in self.units:
            outs.append(unit(x))
        return self.classifier(self.dropout(ops.concat(outs, axis=-1)))


def samples_per_s(net, x, y, steps):
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), nn.Adam(net.trainable_params(), 1e-3))
    step.set_train(True)
    xs, ys = ms.Tensor(x), ms.Tensor(y)
    step(xs, ys)  # compile
    start = time.perf_counter()
    for _ in range(steps):
        step(xs, ys)
    return steps * len(x) / (time.perf_counter() - start)


def extractor_speed(steps):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (BATCH * steps, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 11, BATCH * steps).astype(np.int32)
    classifier = NoisyMnistClassifier(FrameExtractor())
    step = nn.TrainOneStepCell(nn.WithLossCell(classifier, nn.NLLLoss()), nn.Adam(classifier.trainable_params(), 1e-3))
    step.set_train(True)
    step(ms.Tensor(features.normalise(frames[:BATCH])), ms.Tensor(labels[:BATCH]))
    start = time.perf_counter()
    for lo in range(0, len(frames), BATCH):
        step(ms.Tensor(features.normalise(frames[lo : lo + BATCH])), ms.Tensor(labels[lo : lo + BATCH]))
    train = len(frames) / (time.perf_counter() - start)
    videos = rng.integers(0, 256, (256, 25, 28, 28), dtype=np.uint8)
    out = np.empty((256, 25, 50), np.float32)
    features.extract(classifier.extractor, videos[:64], out[:64], 64, desc="warm-up")
    start = time.perf_counter()
    features.extract(classifier.extractor, videos, out, 64, desc="extract")
    return train, videos.shape[0] * 25 / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per configuration")
    args = parser.parse_args()
    device.init("CPU", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 25, 50)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
    print(f"Attention Cluster training, batch {BATCH}, samples/s (higher is better)")
    print(f"{'fc':>3} {'natt':>5} {'batched':>10} {'unit loop':>10} {'ratio':>7}")
    for fc, natt in ((1, 8), (2, 128)):
        fast = samples_per_s(AttentionCluster((50,), natt=natt, fc=fc), x, y, args.steps)
        slow = samples_per_s(LoopAttentionCluster(50, natt, fc), x, y, max(5, args.steps // 5))
        print(f"{fc:>3} {natt:>5} {fast:>10,.0f} {slow:>10,.0f} {fast / slow:>6.1f}x", flush=True)
    train, extract = extractor_speed(args.steps * 4)
    print(f"frame extractor: training {train:,.0f} frames/s (batch {BATCH}), extraction {extract:,.0f} frames/s")


if __name__ == "__main__":
    main()
