"""The frame extractor against a plain-numpy transcription of SPEC 5, its two formulations, and
bit-reproducible training (its speed: bench/kernel_path.py, bench/speed.py)."""

import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from conftest import ROOT
from mindspore import nn

from attention_clusters import device, onednn
from attention_clusters.models.extractor import FrameExtractor, column_shifts, row_selectors

device.init("CPU", seed=0)


def conv_valid(x, w, b):
    """x (N, C, H, W), w (O, C, k, k), b (O,) -> (N, O, H-k+1, W-k+1), a direct sum over taps."""
    k = w.shape[-1]
    out_h, out_w = x.shape[2] - k + 1, x.shape[3] - k + 1
    out = np.zeros((x.shape[0], w.shape[0], out_h, out_w))
    for di in range(k):
        for dj in range(k):
            out += np.einsum("nchw,oc->nohw", x[:, :, di : di + out_h, dj : dj + out_w], w[:, :, di, dj])
    return out + b[None, :, None, None]


def max_pool2(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def reference_features(frames, p):
    """SPEC 1 + SPEC 5 in eval mode, numpy float64: uint8 frames (N, 28, 28) -> log-softmax
    features (N, 50)."""
    x = (frames[:, None] / 255.0 - 0.1307) / 0.3081
    x = np.maximum(max_pool2(conv_valid(x, p["conv1.weight"], p["conv1.bias"])), 0)
    x = np.maximum(max_pool2(conv_valid(x, p["conv2.weight"], p["conv2.bias"])), 0)
    x = np.maximum(x.reshape(len(x), -1) @ p["fc1.weight"].T + p["fc1.bias"], 0)
    return (
        x - x.max(axis=1, keepdims=True) - np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
    )


def test_selectors_place_rows_and_columns():
    sel = row_selectors(12)  # conv2: 12 -> 8 rows, pooled 4
    assert sel.shape == (2, 20, 12) and sel.sum() == 40
    assert sel[1, 3 * 5 + 4, 2 * 3 + 1 + 4] == 1  # p=3, d=4, odd rows -> input row 11
    shift = column_shifts(28).reshape(2, 5, 28, 12)
    assert shift[0, 2, 2 * 5 + 2, 5] == 1 and shift[1, 4, 2 * 11 + 1 + 4, 11] == 1
    assert (shift.sum(axis=2) == 1).all()  # every (offset, tap, pooled column) reads one input column


@pytest.mark.parametrize("phase_convolutions", [False, True])
def test_features_match_numpy_reference_of_spec5(phase_convolutions):
    net = FrameExtractor(phase_convolutions=phase_convolutions)
    params = {p.name: p.asnumpy().astype(np.float64) for p in net.get_parameters()}
    assert params["conv1.weight"].shape == (10, 1, 5, 5) and params["conv2.weight"].shape == (20, 10, 5, 5)
    assert params["fc1.weight"].shape == (50, 320)
    frames = np.random.default_rng(3).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    net.set_train(False)
    ours = net(ms.Tensor(frames)).asnumpy()
    assert ours.shape == (7, 50) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference_features(frames, params), rtol=1e-4, atol=1e-4)


def test_the_formulation_is_chosen_by_the_caller():
    """No host-dependent default: the caller says which formulation (device.phase_convolutions_fast)."""
    with pytest.raises(TypeError, match="phase_convolutions must be True or False, got None"):
        FrameExtractor(phase_convolutions=None)
    assert FrameExtractor(phase_convolutions=True).kernels == "phase convolutions"
    assert FrameExtractor(phase_convolutions=False).kernels == "banded matmul"


class Summed(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, frames):
        return self.net(frames).sum()


@pytest.mark.parametrize("train", [False, True])
def test_phase_convolutions_agree_with_banded_products(train):
    """Same parameters, both formulations: equal outputs in inference, and in training (the max
    as b + relu(a - b)) equal second-block maps before dropout and equal parameter gradients."""
    banded, phase = (
        FrameExtractor(dropout=0.0, phase_convolutions=False),
        FrameExtractor(dropout=0.0, phase_convolutions=True),
    )
    ms.load_param_into_net(phase, banded.parameters_dict())
    frames = ms.Tensor(np.random.default_rng(5).integers(0, 256, (32, 28, 28), dtype=np.uint8))
    outs = []
    for net in (banded, phase):
        net.set_train(train)
        grads = ms.grad(Summed(net), grad_position=None, weights=net.trainable_params())(frames)
        outs.append([net(frames).asnumpy()] + [g.asnumpy() for g in grads])
    for ours, theirs in zip(*outs):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


class Maps(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, frames):
        return self.net.maps(frames)


def test_channel_dropout_drops_whole_channels_in_training():
    net = FrameExtractor(phase_convolutions=False)
    frames = ms.Tensor(np.random.default_rng(4).integers(0, 256, (16, 28, 28), dtype=np.uint8))
    probe = Maps(net)
    probe.set_train(False)
    plain = probe(frames).asnumpy()  # (16 frames, 16 pixels, 20 channels)
    probe.set_train(True)
    dropped = probe(frames).asnumpy()
    kept = np.isclose(dropped, 2 * plain, rtol=1e-6, atol=1e-6).all(axis=1)  # scaled by 1 / (1 - 0.5)
    zeroed = (dropped == 0).all(axis=1)
    assert (kept | zeroed).all()  # each (frame, channel) kept or dropped as a whole
    assert 0.3 < zeroed.mean() < 0.7


TRAIN_AND_HASH = """
import hashlib, sys
import mindspore as ms, numpy as np
from mindspore import nn
from attention_clusters import device
from attention_clusters.models.extractor import FrameExtractor, NoisyMnistClassifier
device.init("CPU", seed=5)
clf = NoisyMnistClassifier(FrameExtractor(phase_convolutions=sys.argv[1] == "phase"))
step = nn.TrainOneStepCell(nn.WithLossCell(clf, nn.NLLLoss()), nn.Adam(clf.trainable_params(), 1e-3))
step.set_train(True)
rng = np.random.default_rng(0)
for _ in range(40):
    x = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    step(ms.Tensor(x), ms.Tensor(rng.integers(0, 11, 64).astype(np.int32)))
print(hashlib.sha256(b"".join(p.asnumpy().tobytes() for p in clf.trainable_params())).hexdigest())
"""


@pytest.mark.parametrize("isa, kernels", [("unset", "banded"), ("AVX2", "phase")])
def test_training_is_bit_reproducible_on_all_threads(isa, kernels):
    """Three processes train from one seed on all cores, at once: the weights end bit-identical.

    Run concurrently so that thread timing varies; a gather's scatter-add gradient in conv2
    made one run in three differ here. The phase convolutions run under
    ``ONEDNN_MAX_CPU_ISA=AVX2``, where they are fast (oneDNN's convolution gradients).
    """
    env = {key: value for key, value in os.environ.items() if key not in onednn.CAP_VARIABLES}
    env.update(PYTHONPATH=str(ROOT / "src"), **({} if isa == "unset" else {"ONEDNN_MAX_CPU_ISA": isa}))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TRAIN_AND_HASH, kernels],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(3)
    ]
    hashes = {proc.communicate(timeout=600)[0].strip().splitlines()[-1] for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(hashes) == 1, hashes
