"""LeNet-style frame feature extractor (SPEC 5), in two formulations that are fast on any x86 CPU.

Network (SPEC 5): conv 5x5 1->10 (valid) -> max-pool 2 -> ReLU -> conv 5x5 10->20 (valid) ->
channel dropout -> max-pool 2 -> ReLU -> flatten (320) -> dense 320->50 -> ReLU -> dropout ->
log-softmax. The 50-d log-softmax output is the frame feature; a dense 50->11 head with
log-softmax is added for training on Noisy-MNIST. Layers are initialised
uniform(+-1/sqrt(fan_in)), as in the authors' PyTorch code. Parameters keep the shapes and
meaning of the plain layers (``conv1.weight`` (10, 1, 5, 5), ``fc1.weight`` (50, 320) over the
channel-major NCHW flatten), so a checkpoint reads the same either way.

Why two formulations: MindSpore 2.10's bundled oneDNN runs NCHW float32 convolutions through a
reference kernel when it runs AVX-512 (``jit_uni_ncsp:conv+ref``, 20-40x slower than its AVX2
GEMM path), and its max-pool gradient is slow on every CPU. Each "conv + 2x2 max-pool" block
(:class:`ConvMaxPool`) therefore computes the conv output at the four positions of every
pooling window directly, either

* "banded matmul" (oneDNN on AVX-512, or below AVX2): four products with banded (Toeplitz)
  weight matrices, at matrix-product speed on every ISA; or
* "phase convolutions" (oneDNN on AVX2): one stride-2 convolution with four shifted
  copies of the kernel, 2.3x fewer FLOPs, on oneDNN's fast GEMM path there;

and takes the max of the four as ``max(a, b) = b + relu(a - b)`` in training, whose gradient is
cheap elementwise arithmetic. The caller chooses (:class:`FrameExtractor`'s
``phase_convolutions``; :func:`attention_clusters.device.phase_convolutions_fast` says which
is fast on the host). Where an input gradient is needed the banded form picks
rows by a constant 0/1 matrix rather than a gather, whose scatter-add gradient sums in a
varying order on several threads, and dropout masks come from :class:`SeededDropout`: so
training is bit-reproducible on any thread count, in both formulations.
bench/speed.py measures this against the plain layers and PyTorch.
"""


import mindspore as ms
import numpy as np
from mindspore import nn, ops

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


def _max4(q, training):
    """Elementwise max of the four pooling positions ``q`` (a sequence of 4 tensors), by :func:`_max`."""
    return _max(_max(q[0], q[1], training), _max(q[2], q[3], training), training)


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
    """A valid kxk convolution with bias followed by a 2x2 max-pool, in two formulations.

    Banded matrix products (``construct``): activations are "rows of channels-last pixels",
    float32 (N, H, W*C). For the conv output pixel (r, j) = (2p + rp, 2q + cp) at pooling offset
    (rp, cp), the product of the stacked input rows ``win_rp`` (N*P, k*W*Cin) with the banded
    matrix ``T_cp`` (k*W*Cin, Q*Cout), ``T_cp[(di, col, ci), (q, co)] = weight[co, ci, di,
    col - 2q - cp]`` (zero outside the kernel), gives all channels of all Q pooled columns; the
    pooled output is the max over the four (rp, cp) products plus the bias (max commutes with
    adding a per-channel constant). Input float32 (N, side, side*cin); output float32
    (N, P, P*cout), P = (side - k + 1) // 2.

    Phase convolutions (:meth:`phases`): NCHW float32 (N, Cin, side, side) -> (N, Cout, P, P).

    Args:
        side: H = W of the input. cin, cout: channels. k: kernel size.
        input_grad: whether a gradient flows back into the input (False for the frames).

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
        self.placements = ms.Tensor(phase_placements(k))
        self.phase_conv = ops.Conv2D(4 * cout, k + 1, pad_mode="valid", stride=2)

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
        even, odd = self.windows(x, 0), self.windows(x, 1)
        q = (ops.matmul(even, bands[0]), ops.matmul(even, bands[1]), ops.matmul(odd, bands[0]), ops.matmul(odd, bands[1]))
        y = ops.bias_add(_max4(q, self.training), ops.tile(self.bias, (self.half,)))
        return y.reshape(x.shape[0], self.half, self.half * self.cout)

    def phases(self, x):
        """The block as one stride-2 convolution: float32 NCHW (N, Cin, side, side) ->
        (N, Cout, P, P).

        Kernel (rp, cp) of 4*Cout (k+1)x(k+1) kernels is the weight shifted down rp and right
        cp (:func:`phase_placements`), so output (p, q) of its Cout channels is the conv output
        at (2p + rp, 2q + cp): the four positions of each pooling window, at 1.44x the FLOPs of
        the plain convolution. oneDNN runs it as a GEMM where its ISA is AVX2 (measured ~1.8x
        the banded products' training steps/s there); on AVX-512 it is a reference loop.
        """
        k, cin, cout = self.k, self.cin, self.cout
        kernels = ops.matmul(self.weight.reshape(cout * cin, k * k), self.placements)  # (co ci, phase i j)
        kernels = kernels.reshape(cout, cin, 4, k + 1, k + 1).transpose(2, 0, 1, 3, 4).reshape(4 * cout, cin, k + 1, k + 1)
        q = ops.split(self.phase_conv(x, kernels), cout, 1)  # phases (0, 0), (0, 1), (1, 0), (1, 1)
        return ops.bias_add(_max4(q, self.training), self.bias)


def phase_placements(k=KERNEL):
    """0/1 float32 (k*k, 4*(k+1)*(k+1)): tap (di, dj) of the kernel goes to position
    (rp + di, cp + dj) of phase kernel rp*2 + cp."""
    side = k + 1
    place = np.zeros((k, k, 4, side, side), np.float32)
    for rp in range(2):
        for cp in range(2):
            for di in range(k):
                for dj in range(k):
                    place[di, dj, rp * 2 + cp, rp + di, cp + dj] = 1
    return place.reshape(k * k, 4 * side * side)


def normalise(frames):
    """uint8 frames (any shape) -> float32 ``(x / 255 - 0.1307) / 0.3081`` (SPEC 1), in the graph.

    Done inside the network so that batches cross from numpy as uint8: a quarter of the bytes
    of float32, and no numpy pass over them. One multiply and one add (division kernels are
    slow on CPU).
    """
    return frames.astype(ms.float32) * (1 / (255 * STD)) + (-MEAN / STD)


class FrameExtractor(nn.Cell):
    """Frames -> features. Input uint8 (N, 28, 28) raw MNIST frames (normalised here, SPEC 1);
    output float32 (N, 50).

    Args:
        phase_convolutions: run the blocks as phase convolutions (True) or banded products
            (False). Both compute the same function of the same parameters (equal up to float32
            rounding); which is fast depends on the ISA oneDNN runs
            (:func:`attention_clusters.device.phase_convolutions_fast`). :attr:`kernels` names
            the one in use.
        dropout: dropout probability of the dense layer and of the channel dropout (SPEC 5).

    Raises:
        TypeError: ``phase_convolutions`` is not a bool.
    """

    def __init__(self, *, phase_convolutions, dropout=0.5):
        super().__init__()
        self.conv1 = ConvMaxPool(FRAME_SIDE, 1, 10, input_grad=False)  # frames need no gradient
        self.conv2 = ConvMaxPool((FRAME_SIDE - KERNEL + 1) // 2, 10, 20)
        self.fc1 = uniform_dense(320, FEATURE_DIM)
        self.dropout = SeededDropout(dropout, stream=1)
        self.channel_dropout = SeededDropout(dropout, stream=2, per_channel=True)
        self.relu = nn.ReLU()
        self.log_softmax = nn.LogSoftmax(axis=-1)
        if not isinstance(phase_convolutions, bool):
            raise TypeError(f"phase_convolutions must be True or False, got {phase_convolutions!r}")
        self.phase_convolutions = phase_convolutions
        self.kernels = "phase convolutions" if self.phase_convolutions else "banded matmul"

    def maps(self, frames):
        """Second block before its ReLU: uint8 frames (N, 28, 28) -> float32 (N, 16, 20), pixels
        x channels, channel dropout applied.

        Channel dropout comes after the pooling here; that equals SPEC 5's order (dropout, then
        pooling) because the mask is >= 0 and constant over a channel's pixels.
        """
        n, side = frames.shape[0], FRAME_SIDE
        x = normalise(frames)
        if self.phase_convolutions:
            x = self.conv2.phases(self.relu(self.conv1.phases(x.reshape(n, 1, side, side))))  # (N, 20, 4, 4)
            x = x.reshape(n, self.conv2.cout, -1).transpose(0, 2, 1)
        else:
            x = self.conv2(self.relu(self.conv1(x.reshape(n, side, side))))  # (N, 4, 4*20)
            x = x.reshape(n, -1, self.conv2.cout)
        return self.channel_dropout(x)

    def construct(self, frames):
        x = self.relu(self.maps(frames)).transpose(0, 2, 1)  # (N, 20, 16): NCHW flatten order
        x = self.relu(self.fc1(x.reshape(x.shape[0], -1)))
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
