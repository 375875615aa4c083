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
(:class:`ConvMaxPool`) is one product with a banded (Toeplitz) weight matrix that yields all
four positions of each pooling window; in training the max of two is taken as
``max(a, b) = b + relu(a - b)``, whose gradient is cheap elementwise arithmetic. Where an input
gradient is needed, rows are picked by a constant 0/1 matrix rather than a gather, whose
scatter-add gradient sums in a varying order on several threads, and dropout masks come from
:class:`SeededDropout`: so training is bit-reproducible on any thread count.
bench/speed.py measures this against the plain layers and PyTorch.
"""

import math

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from .dropout import SeededDropout
from .init import uniform_dense, uniform_parameter

FEATURE_DIM = 50
EXTRACTOR_KERNELS = "banded matmul"  # how the convolutions run (no oneDNN convolution kernel); in feature metrics
NOISY_CLASSES = 11
FRAME_SIDE = 28
MEAN, STD = 0.1307, 0.3081  # MNIST frame normalisation (SPEC 1)
KERNEL = 5


def _max(a, b, training):
    """Elementwise max(a, b). In training ``b + relu(a - b)``: its gradient is two cheap
    elementwise ops where MindSpore's Maximum gradient is a slow Select (equal up to rounding)."""
    return b + ops.relu(a - b) if training else ops.maximum(a, b)


def row_selectors(side, k=KERNEL):
    """0/1 float32 (2*P*k, side) matrix stacking the k input rows under each conv output row.

    Rows are ordered (parity, p, d), P = (side - k + 1) // 2: the conv output row of parity
    ``par`` in pooling window ``p`` is 2p + par, and ``sel[(par*P + p)*k + d, 2p + par + d] = 1``,
    so ``sel @ x`` lists the k rows feeding each conv output row, both parities.
    """
    half = (side - k + 1) // 2
    sel = np.zeros((2, half, k, side), np.float32)
    for par in range(2):
        for p in range(half):
            for d in range(k):
                sel[par, p, d, 2 * p + par + d] = 1
    return sel.reshape(2 * half * k, side)


def column_shifts(side, k=KERNEL):
    """0/1 float32 (k, 2*side*Q) matrix placing kernel column dj at input column 2q+par+dj.

    Columns are ordered (parity, col, q), Q = (side - k + 1) // 2:
    ``shift[dj, (par*side + col)*Q + q] = 1`` where ``col == 2q + par + dj``.
    """
    half = (side - k + 1) // 2
    shift = np.zeros((k, 2, side, half), np.float32)
    for par in range(2):
        for q in range(half):
            for dj in range(k):
                shift[dj, par, 2 * q + par + dj, q] = 1
    return shift.reshape(k, 2 * side * half)


class ConvMaxPool(nn.Cell):
    """A valid kxk convolution with bias followed by a 2x2 max-pool, as one banded matrix product.

    Activations are "rows of channels-last pixels": float32 (N, H, W*C). The k input rows under
    every conv output row (both row parities, stacked: "windows", (N*2*P, k*W*Cin)) times the
    banded matrix ``T`` (k*W*Cin, 2*Q*Cout),
    ``T[(di, col, ci), (cp, q, co)] = weight[co, ci, di, col - 2q - cp]`` (zero outside the
    kernel), give the conv output at all four positions (rp, cp) of every 2x2 pooling window;
    the pooled output is the max over the four plus the bias (max commutes with adding a
    per-channel constant). One large product runs nearer the CPU's peak than four small ones.

    Args:
        side: H = W of the input. cin, cout: channels. k: kernel size.
        input_grad: whether a gradient flows back into the input (False for the frames).

    Input float32 (N, side, side*cin); output float32 (N, P, P*cout), P = (side - k + 1) // 2.

    Raises:
        ValueError: side - k + 1 is odd (the 2x2 pool would drop a row).
    """

    def __init__(self, side, cin, cout, k=KERNEL, input_grad=True):
        super().__init__()
        if (side - k + 1) % 2:
            raise ValueError(f"ConvMaxPool needs an even conv output, got side {side} and kernel {k}")
        self.weight = uniform_parameter(cin * k * k, (cout, cin, k, k))
        self.bias = uniform_parameter(cin * k * k, (cout,))
        self.side, self.cin, self.cout, self.k = side, cin, cout, k
        self.half = (side - k + 1) // 2
        self.input_grad = input_grad
        selector = row_selectors(side, k)
        self.rows = ms.Tensor(selector)
        self.row_index = ms.Tensor(selector.argmax(axis=1).astype(np.int32))
        self.shifts = ms.Tensor(column_shifts(side, k))

    def banded(self):
        """The banded weight matrix: float32 (k*W*Cin, 2*Q*Cout), columns (cp, q, co)."""
        k, side, cin, cout, half = self.k, self.side, self.cin, self.cout, self.half
        taps = self.weight.transpose(2, 1, 0, 3).reshape(k * cin * cout, k)  # (di ci co, dj)
        t = ops.matmul(taps, self.shifts).reshape(k, cin, cout, 2, side, half)  # (di, ci, co, cp, col, q)
        return t.transpose(0, 4, 1, 3, 5, 2).reshape(k * side * cin, 2 * half * cout)

    def windows(self, x):
        """The k input rows under each conv output row: float32 (N*2*P, k*W*Cin), rows (n, rp, p).

        A gather where no input gradient is needed; else a product with the 0/1 selector,
        whose gradient (a product too) sums in a fixed order, unlike a gather's scatter-add.
        """
        if self.input_grad and self.training:
            win = ops.matmul(self.rows, x)
        else:
            win = ops.gather(x, self.row_index, 1)
        return win.reshape(x.shape[0] * 2 * self.half, self.k * self.side * self.cin)

    def construct(self, x):
        n, half, cout = x.shape[0], self.half, self.cout
        y = ops.matmul(self.windows(x), self.banded())  # (N*2*P, 2*Q*Cout): rows (n, rp, p), cols (cp, q, co)
        even, odd = ops.split(y.reshape(n, 2, half * 2 * half * cout), 1, 1)  # the two row offsets rp
        y = _max(even, odd, self.training).reshape(n * half, 2, half * cout)
        left, right = ops.split(y, 1, 1)  # the two column offsets cp
        y = _max(left, right, self.training).reshape(n * half, half * cout)
        return ops.bias_add(y, ops.tile(self.bias, (half,))).reshape(n, half, half * cout)


def normalise(frames):
    """uint8 frames (any shape) -> float32 ``(x / 255 - 0.1307) / 0.3081`` (SPEC 1), in the graph.

    Done inside the network so that batches cross from numpy as uint8: a quarter of the bytes
    of float32, and no numpy pass over them.
    """
    return (frames.astype(ms.float32) / 255.0 - MEAN) / STD


class FrameExtractor(nn.Cell):
    """Frames -> features. Input uint8 (N, 28, 28) raw MNIST frames (normalised here, SPEC 1);
    output float32 (N, 50)."""

    def __init__(self, dropout=0.5):
        super().__init__()
        self.conv1 = ConvMaxPool(FRAME_SIDE, 1, 10, input_grad=False)  # frames need no gradient
        self.conv2 = ConvMaxPool((FRAME_SIDE - KERNEL + 1) // 2, 10, 20)
        self.fc1 = uniform_dense(320, FEATURE_DIM)
        self.dropout = SeededDropout(dropout)
        self.channel_dropout = SeededDropout(dropout, per_channel=True)
        self.relu = nn.ReLU()
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def maps(self, frames):
        """Second block before its ReLU: uint8 frames (N, 28, 28) -> float32 (N, 16, 20), pixels x
        channels, dropout applied.

        Channel dropout comes after the pooling here; that equals SPEC 5's order (dropout, then
        pooling) because the mask is >= 0 and constant over a channel's pixels.
        """
        n = frames.shape[0]
        x = self.relu(self.conv1(normalise(frames).reshape(n, FRAME_SIDE, FRAME_SIDE)))
        x = self.conv2(x)  # (N, 4, 4*20)
        return self.channel_dropout(x.reshape(n, x.shape[1] * x.shape[1], self.conv2.cout))

    def construct(self, frames):
        x = self.relu(self.maps(frames))
        n, pixels, channels = x.shape
        side = int(math.isqrt(pixels))
        x = x.reshape(n, side, side, channels).transpose(0, 3, 1, 2).reshape(n, -1)  # NCHW flatten
        x = self.relu(self.fc1(x))
        return self.log_softmax(self.dropout(x))


class NoisyMnistClassifier(nn.Cell):
    """Extractor plus the 50->11 training head: uint8 frames (N, 28, 28) -> float32 (N, 11)
    log-probabilities."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor
        self.head = uniform_dense(FEATURE_DIM, NOISY_CLASSES)
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def construct(self, frames):
        return self.log_softmax(self.head(self.extractor(frames)))
