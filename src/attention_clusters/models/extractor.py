"""LeNet-style frame feature extractor (SPEC 5), computed with matrix products only.

Network (SPEC 5): conv 5x5 1->10 (valid) -> max-pool 2 -> ReLU -> conv 5x5 10->20 (valid) ->
channel dropout -> max-pool 2 -> ReLU -> flatten (320) -> dense 320->50 -> ReLU -> dropout ->
log-softmax. The 50-d log-softmax output is the frame feature; a dense 50->11 head with
log-softmax is added for training on Noisy-MNIST. Layers are initialised
uniform(+-1/sqrt(fan_in)), as in the authors' PyTorch code. Parameters keep the shapes and
meaning of the plain layers (``conv1.weight`` (10, 1, 5, 5), ``fc1.weight`` (50, 320) over the
channel-major NCHW flatten), so a checkpoint reads the same either way.

Why matrix products: MindSpore 2.10's bundled oneDNN runs NCHW float32 convolutions through a
reference kernel on AVX-512 CPUs (``jit_uni_ncsp:conv+ref``, 20-40x slower than its AVX2
path), and its max-pool gradient is slow on every CPU. Here each "conv + 2x2 max-pool" block
(:class:`ConvMaxPool`) is four products with banded (Toeplitz) weight matrices, one per
position in the pooling window, and the max of four is taken with
``max(a, b) = b + relu(a - b)``, whose gradient is cheap elementwise arithmetic. Rows are
picked by a constant 0/1 matrix rather than a gather, whose scatter-add gradient sums in a
varying order on several threads: so training is bit-reproducible on any thread count.
bench/speed.py measures this against the plain layers and PyTorch.
"""

import math

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Uniform, initializer

FEATURE_DIM = 50
EXTRACTOR_KERNELS = "banded matmul"  # how the convolutions run (no oneDNN convolution kernel); in feature metrics
NOISY_CLASSES = 11
FRAME_SIDE = 28
KERNEL = 5


def _uniform(fan_in, shape):
    return ms.Parameter(initializer(Uniform(1 / math.sqrt(fan_in)), shape, ms.float32))


def _dense(fan_in, fan_out):
    bound = Uniform(1 / math.sqrt(fan_in))
    return nn.Dense(fan_in, fan_out, weight_init=bound, bias_init=bound)


def _max(a, b):
    """Elementwise max(a, b) as ``b + relu(a - b)`` (exact; ties send the gradient to b)."""
    return b + ops.relu(a - b)


def row_selectors(side, k=KERNEL):
    """0/1 float32 (2, P*k, side) matrices stacking the k input rows under each conv output row.

    For conv output rows of parity ``par`` (row ``2p + par``), P = (side - k + 1) // 2,
    ``sel[par][p*k + d, 2p + par + d] = 1``: ``sel[par] @ x`` lists the k rows feeding each.
    """
    half = (side - k + 1) // 2
    sel = np.zeros((2, half * k, side), np.float32)
    for par in range(2):
        for p in range(half):
            for d in range(k):
                sel[par, p * k + d, 2 * p + par + d] = 1
    return sel


def column_shifts(side, k=KERNEL):
    """0/1 float32 (2, k, side * Q) matrices placing kernel column dj at input column 2q+par+dj.

    ``shift[par][dj, col * Q + q] = 1`` where ``col == 2q + par + dj``, Q = (side - k + 1) // 2.
    """
    half = (side - k + 1) // 2
    shift = np.zeros((2, k, side, half), np.float32)
    for par in range(2):
        for q in range(half):
            for dj in range(k):
                shift[par, dj, 2 * q + par + dj, q] = 1
    return shift.reshape(2, k, side * half)


class ConvMaxPool(nn.Cell):
    """A valid kxk convolution with bias followed by a 2x2 max-pool, as banded matrix products.

    Activations are "rows of channels-last pixels": float32 (N, H, W*C). For the conv output
    pixel (r, j) = (2p + rp, 2q + cp) at pooling offset (rp, cp), the product of the stacked
    input rows ``win_rp`` (N*P, k*W*Cin) with the banded matrix ``T_cp`` (k*W*Cin, Q*Cout),
    ``T_cp[(di, col, ci), (q, co)] = weight[co, ci, di, col - 2q - cp]`` (zero outside the
    kernel), gives all channels of all Q pooled columns; the pooled output is the max over the
    four (rp, cp) products plus the bias (max commutes with adding a per-channel constant).

    Args:
        side: H = W of the input. cin, cout: channels. k: kernel size.

    Input float32 (N, side, side*cin); output float32 (N, P, P*cout), P = (side - k + 1) // 2.
    """

    def __init__(self, side, cin, cout, k=KERNEL):
        super().__init__()
        if (side - k + 1) % 2:
            raise ValueError(f"ConvMaxPool needs an even conv output, got side {side} and kernel {k}")
        self.weight = _uniform(cin * k * k, (cout, cin, k, k))
        self.bias = _uniform(cin * k * k, (cout,))
        self.side, self.cin, self.cout, self.k = side, cin, cout, k
        self.half = (side - k + 1) // 2
        self.rows = [ms.Tensor(sel) for sel in row_selectors(side, k)]
        self.shifts = [ms.Tensor(shift) for shift in column_shifts(side, k)]

    def banded(self, shift):
        """The banded weight matrix for one column offset: float32 (k*W*Cin, Q*Cout)."""
        k, side, cin, cout, half = self.k, self.side, self.cin, self.cout, self.half
        taps = self.weight.transpose(2, 1, 0, 3).reshape(k * cin * cout, k)  # (di ci co, dj)
        t = ops.matmul(taps, shift).reshape(k, cin, cout, side, half)  # (di, ci, co, col, q)
        return t.transpose(0, 3, 1, 4, 2).reshape(k * side * cin, half * cout)

    def construct(self, x):
        n = x.shape[0]
        bands = [self.banded(shift) for shift in self.shifts]
        pooled = []
        for rows in self.rows:
            win = ops.matmul(rows, x).reshape(n * self.half, self.k * self.side * self.cin)
            pooled.append(_max(ops.matmul(win, bands[0]), ops.matmul(win, bands[1])))
        y = _max(pooled[0], pooled[1]).reshape(n, self.half, self.half, self.cout) + self.bias
        return y.reshape(n, self.half, self.half * self.cout)


class FrameExtractor(nn.Cell):
    """Frames -> features. Input float32 (N, 28, 28) normalised frames; output float32 (N, 50)."""

    def __init__(self, dropout=0.5):
        super().__init__()
        self.conv1 = ConvMaxPool(FRAME_SIDE, 1, 10)
        self.conv2 = ConvMaxPool((FRAME_SIDE - KERNEL + 1) // 2, 10, 20)
        self.fc1 = _dense(320, FEATURE_DIM)
        self.dropout = nn.Dropout(p=dropout)
        self.channel_dropout = nn.Dropout(p=dropout)  # applied to a per-(frame, channel) mask
        self.relu = nn.ReLU()
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def maps(self, frames):
        """Second block before its ReLU: float32 (N, 16, 20), pixels x channels, dropout applied.

        Channel dropout comes after the pooling here; that equals SPEC 5's order (dropout, then
        pooling) because the mask is >= 0 and constant over a channel's pixels.
        """
        n = frames.shape[0]
        x = self.relu(self.conv1(frames.reshape(n, FRAME_SIDE, FRAME_SIDE)))
        x = self.conv2(x)  # (N, 4, 4*20)
        x = x.reshape(n, x.shape[1] * x.shape[1], self.conv2.cout)
        if self.training:
            x = x * self.channel_dropout(ops.ones((n, 1, self.conv2.cout), ms.float32))
        return x

    def construct(self, frames):
        x = self.relu(self.maps(frames))
        n, pixels, channels = x.shape
        side = int(math.isqrt(pixels))
        x = x.reshape(n, side, side, channels).transpose(0, 3, 1, 2).reshape(n, -1)  # NCHW flatten
        x = self.relu(self.fc1(x))
        return self.log_softmax(self.dropout(x))


class NoisyMnistClassifier(nn.Cell):
    """Extractor plus the 50->11 training head; output float32 (N, 11) log-probabilities."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor
        self.head = _dense(FEATURE_DIM, NOISY_CLASSES)
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def construct(self, frames):
        return self.log_softmax(self.head(self.extractor(frames)))
