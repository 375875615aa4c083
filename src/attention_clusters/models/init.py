"""Weight initialisation shared by the models: uniform(+-1/sqrt(fan_in)), as the authors' PyTorch code."""

import math

import mindspore as ms
from mindspore import nn
from mindspore.common.initializer import Uniform, initializer


def uniform_parameter(fan_in, shape):
    """A float32 Parameter of ``shape`` drawn uniform(+-1/sqrt(fan_in))."""
    return ms.Parameter(initializer(Uniform(1 / math.sqrt(fan_in)), shape, ms.float32))


def uniform_dense(fan_in, fan_out):
    """``nn.Dense(fan_in, fan_out)`` with weight and bias drawn uniform(+-1/sqrt(fan_in))."""
    bound = Uniform(1 / math.sqrt(fan_in))
    return nn.Dense(fan_in, fan_out, weight_init=bound, bias_init=bound)
