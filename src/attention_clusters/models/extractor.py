"""LeNet-style frame feature extractor (SPEC 5).

conv 5x5 1->10 (valid) -> max-pool 2 -> ReLU -> conv 5x5 10->20 (valid) -> channel dropout ->
max-pool 2 -> ReLU -> flatten (320) -> dense 320->50 -> ReLU -> dropout -> log-softmax.
The 50-d log-softmax output is the frame feature; a dense 50->11 head with log-softmax is added
for training on Noisy-MNIST. Layers are initialised uniform(+-1/sqrt(fan_in)), as in the
authors' PyTorch code.

On a 2-core CPU, MindSpore 2.10's ``nn.Conv2d`` and ``nn.MaxPool2d`` (with the op thread
count set to the core count) measured faster than slicing + matmul rewrites of the same layers
and than a reshape + reduce-max pooling, so the plain layers are used (figures in bench/).
"""

import math

from mindspore import nn
from mindspore.common.initializer import Uniform

FEATURE_DIM = 50
NOISY_CLASSES = 11
FRAME_SIDE = 28


def _init(fan_in):
    return {"weight_init": Uniform(1 / math.sqrt(fan_in)), "bias_init": Uniform(1 / math.sqrt(fan_in))}


class FrameExtractor(nn.Cell):
    """Frames -> features. Input float32 (N, 28, 28) normalised frames; output float32 (N, 50)."""

    def __init__(self, dropout=0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5, pad_mode="valid", has_bias=True, **_init(25))
        self.conv2 = nn.Conv2d(10, 20, 5, pad_mode="valid", has_bias=True, **_init(250))
        self.channel_dropout = nn.Dropout2d(p=dropout)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Dense(320, FEATURE_DIM, **_init(320))
        self.dropout = nn.Dropout(p=dropout)
        self.relu = nn.ReLU()
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def construct(self, frames):
        x = frames.reshape(frames.shape[0], 1, FRAME_SIDE, FRAME_SIDE)
        x = self.relu(self.pool(self.conv1(x)))
        x = self.relu(self.pool(self.channel_dropout(self.conv2(x))))
        x = self.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.log_softmax(self.dropout(x))


class NoisyMnistClassifier(nn.Cell):
    """Extractor plus the 50->11 training head; output float32 (N, 11) log-probabilities."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor
        self.head = nn.Dense(FEATURE_DIM, NOISY_CLASSES, **_init(FEATURE_DIM))
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def construct(self, frames):
        return self.log_softmax(self.head(self.extractor(frames)))
