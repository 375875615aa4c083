"""What bench/speed.py measures our networks against, in MindSpore: the slow formulations.

* :class:`LoopAttentionCluster`: the SPEC 6 formula one attention unit at a time in Python (the
  reference implementations' per-unit loop).
* :class:`PlainFrameExtractor`: the SPEC 5 network with ``nn.Conv2d`` and ``nn.MaxPool2d``,
  as this project ran it before the banded-matmul extractor (oneDNN convolutions: fast on AVX2,
  a reference kernel on AVX-512).
"""

import math

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from attention_clusters.models.attention_cluster import NUM_CLASSES
from attention_clusters.models.extractor import normalise


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


class PlainFrameExtractor(nn.Cell):
    """SPEC 5 with MindSpore's convolution and pooling layers: uint8 (N, 28, 28) -> float32 (N, 50)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5, pad_mode="valid", has_bias=True)
        self.conv2 = nn.Conv2d(10, 20, 5, pad_mode="valid", has_bias=True)
        self.channel_dropout = nn.Dropout2d(p=0.5)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Dense(320, 50)
        self.dropout = nn.Dropout(p=0.5)
        self.relu = nn.ReLU()
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def construct(self, frames):
        x = normalise(frames).reshape(frames.shape[0], 1, 28, 28)
        x = self.relu(self.pool(self.conv1(x)))
        x = self.relu(self.pool(self.channel_dropout(self.conv2(x))))
        x = self.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.log_softmax(self.dropout(x))
