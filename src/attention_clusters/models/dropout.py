"""Dropout whose masks are the same on every run for a given seed, on any number of threads."""

import mindspore as ms
import numpy as np
from mindspore import nn, ops

DRAW_BITS = 16  # random bits taken from each UniformInt draw


def mask_bits(p):
    """Bits of randomness per mask element: the fewest b in (1, 2, 4, 8, 16) with p * 2**b a
    whole number (p = 0.5: 1 bit), else 16 (p is then rounded to a multiple of 2**-16).

    Raises:
        ValueError: p is not a number in [0, 1), or rounds to 1 at 16 bits (p > 1 - 2**-17).
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0 <= p < 1:
        raise ValueError(f"dropout probability must be a number in [0, 1), got {p!r}")
    p = float(p)
    if round(p * 2**DRAW_BITS) == 2**DRAW_BITS:
        raise ValueError(f"dropout probability {p} rounds to 1 at {DRAW_BITS}-bit resolution: nothing would be kept")
    return next((b for b in (1, 2, 4, 8) if (p * 2**b).is_integer()), DRAW_BITS)


class SeededDropout(nn.Cell):
    """Inverted dropout: in training ``x * keep / P(keep)``, keep ~ Bernoulli(1 - p) per element
    (or per channel, below); the identity in eval mode.

    MindSpore 2.10's CPU Dropout kernel draws different masks from run to run when it runs on
    several threads, even with the seed set (measured: 4 distinct results in 9 runs); its
    UniformInt kernel draws the same numbers every run. Each 16-bit draw k is cut into 16 / b
    fields of b bits (:func:`mask_bits`): field i, read as the fraction
    ``frac(k * 2**(i*b - 16))`` (exact in float32), keeps its element when its top b bits are
    >= p * 2**b: exactly Bernoulli(1 - p) for p a multiple of 2**-b. For p = 0.5 one draw serves
    16 elements: the random kernels all run near 40 M numbers/s on CPU, and float arithmetic is
    used because MindSpore's integer shift and and kernels are slower still. The kernel's first
    seed is the global one (``mindspore.set_seed``, as ``device.init`` sets it), its second the
    layer's ``stream``, so each layer of a network draws its own masks, the same in every
    process whatever else it built before.

    Args:
        p: drop probability in [0, 1).
        stream: the layer's seed within its network (an int >= 1, distinct per layer).
        per_channel: drop whole channels: for x of shape (N, pixels, C) the mask is (N, 1, C)
            (the channel dropout of SPEC 5); otherwise one draw per element.

    Raises:
        ValueError: p outside [0, 1) or within 2**-17 of 1 (:func:`mask_bits`).
    """

    def __init__(self, p, stream, per_channel=False):
        super().__init__()
        bits = mask_bits(p)
        self.per_channel, self.bits = per_channel, bits
        self.threshold = round(float(p) * 2**bits)  # p in units of 2**-bits; 0: no dropout
        self.scale = 2**bits / (2**bits - self.threshold)  # 1 / P(keep), exact for the rounded p
        self.uniform = ops.UniformInt(seed=ms.get_seed() or 0, seed2=stream)
        self.scales = ms.Tensor(2.0 ** np.arange(-DRAW_BITS, 0, bits, dtype=np.float32))  # (16 / b,) field i: 2**(i*b - 16)
        self.low, self.high = ms.Tensor(0, ms.int32), ms.Tensor(2**DRAW_BITS, ms.int32)

    def construct(self, x):
        if not self.training or self.threshold == 0:
            return x
        shape = (x.shape[0], 1, x.shape[-1]) if self.per_channel else x.shape
        size = 1
        for dim in shape:
            size *= dim
        fields = min(DRAW_BITS // self.bits, size & -size)  # a power of two dividing size
        draws = self.uniform((size // fields, 1), self.low, self.high)
        scaled = draws.astype(ms.float32) * self.scales[:fields]  # (draws, fields)
        keep = (scaled - ops.floor(scaled) >= self.threshold / 2**self.bits).astype(x.dtype).reshape(shape)
        return x * keep * self.scale
