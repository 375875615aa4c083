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
position in the pooling window; in training the max of four is taken as
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

from .. import device
from .dropout import SeededDropout
from .init import uniform_dense, uniform_parameter

FEATURE_DIM = 50
NOISY_CLASSES = 11
FRAME_SIDE = 28
MEAN, STD = 0.1307, 0.3081  # MNIST frame normalisation (SPEC 1)
KERNEL = 5


def _max(a, b, training):
    """Elementwise max(a, b). In training ``b + relu(a - b)``: its gradient is two cheap
    elementwise ops where MindSpore's Maximum gradient is a slow Select (equal up to rounding)."""
    return b + ops.relu(a - b) if training else ops.maximum(a, b)


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
        selectors = row_selectors(side, k)
        self.rows = [ms.Tensor(sel) for sel in selectors]
        self.row_index = [ms.Tensor(sel.argmax(axis=1).astype(np.int32)) for sel in selectors]
        self.shifts = [ms.Tensor(shift) for shift in column_shifts(side, k)]
        self.conv = ops.Conv2D(cout, k, pad_mode="valid")  # the plain layer, for plain()
        self.pool = ops.MaxPool(kernel_size=2, strides=2)

    def banded(self, shift):
        """The banded weight matrix for one column offset: float32 (k*W*Cin, Q*Cout)."""
        k, side, cin, cout, half = self.k, self.side, self.cin, self.cout, self.half
        taps = self.weight.transpose(2, 1, 0, 3).reshape(k * cin * cout, k)  # (di ci co, dj)
        t = ops.matmul(taps, shift).reshape(k, cin, cout, side, half)  # (di, ci, co, col, q)
        return t.transpose(0, 3, 1, 4, 2).reshape(k * side * cin, half * cout)

    def windows(self, x, par):
        """The k input rows under each conv output row of parity ``par``: (N*P, k*W*Cin).

        A gather where no input gradient is needed; else a product with the 0/1 selector,
        whose gradient (a product too) sums in a fixed order, unlike a gather's scatter-add.
        """
        if self.input_grad and self.training:
            win = ops.matmul(self.rows[par], x)
        else:
            win = ops.gather(x, self.row_index[par], 1)
        return win.reshape(x.shape[0] * self.half, self.k * self.side * self.cin)

    def construct(self, x):
        bands = [self.banded(shift) for shift in self.shifts]
        pooled = []
        for par in range(2):
            win = self.windows(x, par)
            pooled.append(_max(ops.matmul(win, bands[0]), ops.matmul(win, bands[1]), self.training))
        y = ops.bias_add(_max(pooled[0], pooled[1], self.training), ops.tile(self.bias, (self.half,)))
        return y.reshape(x.shape[0], self.half, self.half * self.cout)

    def plain(self, x):
        """The same block with oneDNN's convolution and max-pool kernels: float32 NCHW
        (N, Cin, side, side) -> (N, Cout, P, P). Fast where oneDNN runs at most AVX2 (its NCHW
        convolution then is a GEMM; on AVX-512 it is a reference loop, 20-40x slower). The bias
        is added after the pool, to a quarter of the values (measured 26 -> 20 ms for conv1 on
        1,600 frames)."""
        return ops.bias_add(self.pool(self.conv(x, self.weight)), self.bias)


def normalise(frames):
    """uint8 frames (any shape) -> float32 ``(x / 255 - 0.1307) / 0.3081`` (SPEC 1), in the graph.

    Done inside the network so that batches cross from numpy as uint8: a quarter of the bytes
    of float32, and no numpy pass over them. One multiply and one add (division kernels are
    slow on CPU).
    """
    return frames.astype(ms.float32) * (1 / (255 * STD)) + (-MEAN / STD)


def plain_convolutions_fast():
    """Whether inference here runs the convolutions with oneDNN (:meth:`ConvMaxPool.plain`):
    where oneDNN's ISA is AVX2 (:func:`device.cpu`), measured 16,000-24,000 frames/s against
    12,000-13,000 for the banded products on a 2-core Xeon with ``ONEDNN_MAX_CPU_ISA=AVX2``;
    on AVX-512 oneDNN's NCHW convolution is a reference loop (about 500 frames/s)."""
    return device.cpu()["onednn_isa"] == "avx2"


class FrameExtractor(nn.Cell):
    """Frames -> features. Input uint8 (N, 28, 28) raw MNIST frames (normalised here, SPEC 1);
    output float32 (N, 50).

    Training always runs the banded products (their gradients are cheap and bit-reproducible);
    inference runs oneDNN's convolution kernels instead where those are faster
    (:func:`plain_convolutions_fast`, decided when the network is built, named by
    :attr:`kernels`). Both compute the same function of the same parameters (equal up to
    float32 rounding).
    """

    def __init__(self, dropout=0.5):
        super().__init__()
        self.conv1 = ConvMaxPool(FRAME_SIDE, 1, 10, input_grad=False)  # frames need no gradient
        self.conv2 = ConvMaxPool((FRAME_SIDE - KERNEL + 1) // 2, 10, 20)
        self.fc1 = uniform_dense(320, FEATURE_DIM)
        self.dropout = SeededDropout(dropout)
        self.channel_dropout = SeededDropout(dropout, per_channel=True)
        self.relu = nn.ReLU()
        self.log_softmax = nn.LogSoftmax(axis=-1)
        self.plain_inference = plain_convolutions_fast()
        self.kernels = {"training": "banded matmul", "inference": "oneDNN convolution" if self.plain_inference else "banded matmul"}

    def maps(self, frames):
        """Second block before its ReLU (banded products): uint8 frames (N, 28, 28) -> float32
        (N, 16, 20), pixels x channels, dropout applied.

        Channel dropout comes after the pooling here; that equals SPEC 5's order (dropout, then
        pooling) because the mask is >= 0 and constant over a channel's pixels.
        """
        n = frames.shape[0]
        x = self.relu(self.conv1(normalise(frames).reshape(n, FRAME_SIDE, FRAME_SIDE)))
        x = self.conv2(x)  # (N, 4, 4*20)
        return self.channel_dropout(x.reshape(n, x.shape[1] * x.shape[1], self.conv2.cout))

    def flat_maps(self, frames):
        """Both blocks after their ReLU, flattened channel-major (NCHW): float32 (N, 320)."""
        n = frames.shape[0]
        if self.plain_inference and not self.training:
            x = normalise(frames).reshape(n, 1, FRAME_SIDE, FRAME_SIDE)
            return self.relu(self.conv2.plain(self.relu(self.conv1.plain(x)))).reshape(n, -1)
        x = self.relu(self.maps(frames))
        side = int(math.isqrt(x.shape[1]))
        return x.reshape(n, side, side, x.shape[2]).transpose(0, 3, 1, 2).reshape(n, -1)

    def construct(self, frames):
        x = self.relu(self.fc1(self.flat_maps(frames)))
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
