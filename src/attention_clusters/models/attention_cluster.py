"""Attention Cluster with shifting attention (Long et al., CVPR 2018, section 3; SPEC 6).

For input x of shape (N, L, F) and C = natt units, all units at once:
    scores s = x W + b                     (fc=1)   or   tanh(x W1 + b1) W2 + b2   (fc=2)
    a = softmax over L of s, (N, C, L)
    v = a x,                                (N, C, F)  one batched matmul
    o_k = w_k v_k + b_k;  o_k = o_k / ||o_k||_2 / sqrt(C)   (shifting operation)
Each feature stream has its own cluster; the (N, C*F_s) outputs of the streams are concatenated,
then dropout 0.5 (in training) and a dense layer to the classes.

The network draws no random numbers: in training the dropout mask is an input (see
``train_step.MaskedCrossEntropy``), so a step's masks depend only on what the caller derives
them from, and eval, export and inference run :meth:`AttentionCluster.construct`, which has no
dropout.
"""

import math

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal

from .init import uniform_dense

NUM_CLASSES = 1024
HIDDEN = 128  # width of the fc=2 scoring layer
NORM_EPS = 1e-12  # guards the L2 normalisation of an all-zero vector


class ShiftingAttention(nn.Cell):
    """One attention cluster over one feature stream.

    Args:
        feature_dim: F. natt: C, number of attention units. fc: 1 or 2 scoring layers.
        fused: None for MindSpore's own kernels, or a ``fused_ops.FusedOps`` whose
            ``frame_softmax``, ``shift_norm`` and (fc=2) ``bias_tanh`` compute the same (up to
            float32 rounding).

    Input float32 (N, L, F); output float32 (N, C*F).
    """

    def __init__(self, feature_dim, natt, fc, fused=None):
        super().__init__()
        if fc not in (1, 2) or natt < 1:
            raise ValueError(f"ShiftingAttention needs fc in {{1, 2}} and natt >= 1, got fc={fc}, natt={natt}")
        self.natt = natt
        self.fc = fc
        if fc == 1:
            self.score = uniform_dense(feature_dim, natt)
        else:
            self.score = nn.SequentialCell([uniform_dense(feature_dim, HIDDEN), nn.Tanh(), uniform_dense(HIDDEN, natt)])
        std = math.sqrt(1 / math.sqrt(natt))
        self.shift_w = ms.Parameter(ms.common.initializer.initializer(Normal(std), (1, natt, 1), ms.float32))
        self.shift_b = ms.Parameter(ms.common.initializer.initializer(Normal(std), (1, natt, 1), ms.float32))
        self.scale = 1 / math.sqrt(natt)
        self.softmax = nn.Softmax(axis=-1)
        self.shift_norm = fused and fused.shift_norm
        self.bias_tanh = fused and fused.bias_tanh if fc == 2 else None
        self.frame_softmax = fused and fused.frame_softmax
        self.product = ops.MatMul(transpose_b=True)

    def weights(self, x):
        """Attention weights a: float32 (N, C, L), softmax over the L frames."""
        if self.frame_softmax is None:
            return self.softmax(self.scores(x).transpose(0, 2, 1))
        return self.frame_softmax(self.scores(x))

    def scores(self, x):
        """Scores s: float32 (N, L, C)."""
        if self.bias_tanh is None:
            return self.score(x)
        hidden, last = self.score[0], self.score[2]
        n, frames, dim = x.shape
        t = self.bias_tanh(self.product(x.reshape(n * frames, dim), hidden.weight), hidden.bias)
        return last(t).reshape(n, frames, -1)

    def construct(self, x):
        v = ops.BatchMatMul()(self.weights(x), x)  # (N, C, F)
        if self.shift_norm is None:
            o = self.shift_w * v + self.shift_b
            norm = ops.sqrt((o * o).sum(axis=-1, keepdims=True))
            o = o / ops.maximum(norm, NORM_EPS) * self.scale
        else:
            o = self.shift_norm(v, self.shift_w, self.shift_b)
        return o.reshape(o.shape[0], -1)


class AttentionCluster(nn.Cell):
    """Attention Cluster classifier over one or more feature streams (SPEC 6).

    Args:
        feature_dims: F of each stream, e.g. ``(50,)``.
        natt: attention units per cluster. fc: 1 or 2. num_classes: 1,024 for Flash-MNIST.
        dropout: dropout probability before the classifier in training (0.5 in the paper); the
            training loss applies it through a mask it is given (:attr:`width` values a sample).
        fused: see :class:`ShiftingAttention` (None: MindSpore's own kernels, as exported).

    Input: one float32 (N, L, F_s) tensor per stream; output float32 (N, num_classes) logits
    (no dropout: the network as evaluated).

    Raises:
        ValueError: fc, natt or dropout out of range.
    """

    def __init__(self, feature_dims=(50,), natt=1, fc=1, num_classes=NUM_CLASSES, dropout=0.5, fused=None):
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"AttentionCluster needs a dropout probability in [0, 1), got {dropout!r}")
        self.clusters = nn.CellList([ShiftingAttention(dim, natt, fc, fused) for dim in feature_dims])
        self.dropout = float(dropout)
        self.width = natt * sum(feature_dims)  # C * sum(F_s): values per sample the dropout masks
        self.classifier = uniform_dense(self.width, num_classes)

    def pool(self, *streams):
        """The clusters' outputs, concatenated: float32 (N, C * sum(F_s)), the dropout's input."""
        pooled = [cluster(x) for cluster, x in zip(self.clusters, streams)]
        return pooled[0] if len(pooled) == 1 else ops.concat(pooled, axis=-1)

    def construct(self, *streams):
        return self.classifier(self.pool(*streams))


class AttentionWeights(nn.Cell):
    """The attention weights of a trained model's first stream: float32 (N, C, L)."""

    def __init__(self, model):
        super().__init__()
        self.cluster = model.clusters[0]

    def construct(self, x):
        return self.cluster.weights(x)
