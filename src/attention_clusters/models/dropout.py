"""Dropout whose masks are the same on every run for a given seed, on any number of threads."""

import itertools

import mindspore as ms
from mindspore import nn, ops

_instances = itertools.count(1)  # second seed of each layer built in this process


class SeededDropout(nn.Cell):
    """Inverted dropout: in training ``x * (u >= p) / (1 - p)`` with u ~ uniform[0, 1) drawn per
    element (or per channel, below); the identity in eval mode.

    MindSpore 2.10's CPU Dropout kernel draws different masks from run to run when it runs on
    several threads, even with the seed set (measured: 4 distinct results in 9 runs); its
    UniformReal kernel draws the same numbers every run. The first seed is the global one
    (``mindspore.set_seed``, as ``device.init`` sets it), the second numbers the layers.

    Args:
        p: drop probability in [0, 1).
        per_channel: drop whole channels: for x of shape (N, pixels, C) the mask is (N, 1, C)
            (the channel dropout of SPEC 5); otherwise one draw per element.
    """

    def __init__(self, p=0.5, per_channel=False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.per_channel = p, per_channel
        self.uniform = ops.UniformReal(seed=ms.get_seed() or 0, seed2=next(_instances))

    def construct(self, x):
        if not self.training or self.p == 0:
            return x
        shape = (x.shape[0], 1, x.shape[-1]) if self.per_channel else x.shape
        keep = (self.uniform(shape) >= self.p).astype(x.dtype)
        return x * keep * (1 / (1 - self.p))
