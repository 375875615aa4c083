"""The fused CPU kernels against plain numpy and against the same formulas in MindSpore's own
kernels: outputs, gradients, the whole training loss, bit-reproducible training, and the
fallback where they cannot be built."""

import subprocess
import sys
import tempfile
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from attention_clusters import device, fused_ops, training
from attention_clusters.train_step import DropoutMasks, MaskedCrossEntropy
from attention_clusters.trained_model import build_model

device.init("CPU", seed=0)
FUSED, _, WHY = fused_ops.load("CPU")
needs_kernels = pytest.mark.skipif(FUSED is None, reason=WHY)  # the fallback tests run on any host
T = ms.Tensor


class Weighted(nn.Cell):
    """sum(fn(*inputs) * g): its gradients are the vector-Jacobian products of fn with g."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, *inputs):
        *args, g = inputs
        return (self.fn(*args) * g).sum()


def vjp(fn, args, g, positions):
    grads = ms.grad(Weighted(fn), grad_position=positions)(*map(T, args), T(g))
    return [d.asnumpy() for d in (grads if isinstance(grads, tuple) else (grads,))]


@needs_kernels
def test_softmax_nll_is_the_cross_entropy_and_its_gradient():
    rng = np.random.default_rng(0)
    z, b = rng.standard_normal((7, 13)).astype(np.float32) * 3, rng.standard_normal(13).astype(np.float32)
    y, g = rng.integers(0, 13, 7).astype(np.int32), rng.standard_normal(7).astype(np.float32)
    logits = z.astype(np.float64) + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    nll = -np.log(p[np.arange(7), y])
    np.testing.assert_allclose(FUSED.softmax_nll(T(z), T(b), T(y)).asnumpy(), nll, rtol=1e-5)
    dz = g[:, None] * (p - np.eye(13)[y])  # d/dz of sum(g * nll)
    got_dz, got_db = vjp(FUSED.softmax_nll, (z, b, y), g, (0, 1))
    np.testing.assert_allclose(got_dz, dz, atol=1e-6)
    np.testing.assert_allclose(got_db, dz.sum(0), atol=1e-6)


def stock_shift(v, w, b):
    """The shifting operation in MindSpore's own kernels, as ``ShiftingAttention`` computes it."""
    u = w * v + b
    return u / ops.maximum(ops.sqrt((u * u).sum(axis=-1, keepdims=True)), 1e-12) / np.sqrt(v.shape[1])


@needs_kernels
def test_shift_norm_is_the_shifting_operation_and_its_gradient():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((5, 3, 7)).astype(np.float32)
    w, b = rng.standard_normal((2, 1, 3, 1)).astype(np.float32)
    b[0, 1, 0] = 0
    v[2, 1] = 0  # u = w v + b = 0: normalised by eps, so all zero
    u = w.astype(np.float64) * v + b
    expect = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-12) / np.sqrt(3)
    got = FUSED.shift_norm(T(v), T(w), T(b)).asnumpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-7)
    assert not got[2, 1].any()
    v[2, 1] = 1  # gradients away from the kink at u = 0, where the two differ (NaN in MindSpore's)
    g = rng.standard_normal(v.shape).astype(np.float32)
    for got, want in zip(vjp(FUSED.shift_norm, (v, w, b), g, (0, 1, 2)), vjp(stock_shift, (v, w, b), g, (0, 1, 2))):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@needs_kernels
def test_bias_tanh_is_tanh_of_the_sum_and_its_gradient():
    rng = np.random.default_rng(2)
    z, b = rng.standard_normal((9, 6)).astype(np.float32) * 2, rng.standard_normal(6).astype(np.float32)
    np.testing.assert_allclose(FUSED.bias_tanh(T(z), T(b)).asnumpy(), np.tanh(z.astype(np.float64) + b), atol=1e-6)
    g = rng.standard_normal(z.shape).astype(np.float32)
    t = np.tanh(z.astype(np.float64) + b)
    got_dz, got_db = vjp(FUSED.bias_tanh, (z, b), g, (0, 1))
    np.testing.assert_allclose(got_dz, g * (1 - t * t), atol=1e-6)
    np.testing.assert_allclose(got_db, (g * (1 - t * t)).sum(0), atol=1e-5)


def stock_frame_softmax(s):
    return ops.softmax(s.transpose(0, 2, 1), -1)


@needs_kernels
def test_frame_softmax_is_the_softmax_over_frames_and_its_gradient():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((4, 25, 3)).astype(np.float32) * 4
    e = np.exp(scores.astype(np.float64) - scores.max(1, keepdims=True))
    expect = (e / e.sum(1, keepdims=True)).transpose(0, 2, 1)
    np.testing.assert_allclose(FUSED.frame_softmax(T(scores)).asnumpy(), expect, rtol=1e-5, atol=1e-7)
    g = rng.standard_normal(expect.shape).astype(np.float32)
    (got,) = vjp(FUSED.frame_softmax, (scores,), g, (0,))
    (want,) = vjp(stock_frame_softmax, (scores,), g, (0,))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("fc, natt", [(1, 3), (2, 2)])
def test_the_training_loss_and_every_gradient_match_mindspores_kernels(fc, natt):
    """The same weights give the same loss and parameter gradients with and without the fused kernels."""
    rng = np.random.default_rng(3)
    x = T(rng.standard_normal((16, 25, 50)).astype(np.float32) - 7)  # features are log-probabilities
    y = T(rng.integers(0, 1024, 16).astype(np.int32))
    results = []
    for fused in (None, FUSED):
        ms.set_seed(5)
        loss = MaskedCrossEntropy(build_model(fc, natt, (50,), fused), "sum", fused and fused.softmax_nll)
        keep = T(DropoutMasks(0.5, 0, 1, 0, 16, loss.net.width)())
        grads = ms.grad(loss, grad_position=None, weights=loss.trainable_params())(x, y, keep)
        results.append((loss(x, y, keep).asnumpy(), [g.asnumpy() for g in grads]))
    (stock_loss, stock_grads), (fused_loss, fused_grads) = results
    np.testing.assert_allclose(fused_loss, stock_loss, rtol=1e-5)
    assert len(fused_grads) == len(stock_grads) == (4 if fc == 1 else 6) + 2
    for got, want in zip(fused_grads, stock_grads):
        # norm-wise: where tanh saturates, 1 - t^2 keeps few significant bits in either kernel
        error = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-5)  # the scores' last bias: gradient 0
        assert got.shape == want.shape and error < 1e-3, error


@needs_kernels
def test_a_two_stream_model_gives_the_same_logits():
    rng = np.random.default_rng(4)
    xs = [T(rng.standard_normal((8, 25, d)).astype(np.float32)) for d in (50, 20)]
    logits = []
    for fused in (None, FUSED):
        ms.set_seed(6)
        logits.append(build_model(2, 3, (50, 20), fused)(*xs).asnumpy())
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-4, atol=1e-5)


def train_one_epoch(seed):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 25, 50)).astype(np.float32), rng.integers(0, 1024, 256).astype(np.int32)
    p = SimpleNamespace(fc=2, natt=2, lr=1e-3, weight_decay=1e-4, batch_size=64, epochs=1, seed=seed)
    p.__dict__.update(loss_reduction="sum", optimizer="adam", lr_schedule="constant", warmup_epochs=0, patience=0)
    with tempfile.TemporaryDirectory() as state:
        trainer = training.Trainer(p, x, y, x[:64], y[:64], state, log=lambda line: None, fused=FUSED)
        loss, _ = trainer.train_epoch(1)
    return loss, [w.asnumpy() for w in trainer.net.trainable_params()]


@needs_kernels
def test_training_with_the_fused_kernels_is_bit_reproducible():
    (loss, weights), (again, same) = train_one_epoch(0), train_one_epoch(0)
    assert loss == again
    for a, b in zip(weights, same):
        np.testing.assert_array_equal(a, b)
    assert any((a != b).any() for a, b in zip(weights, train_one_epoch(1)[1]))  # the seed matters


@needs_kernels
def test_a_label_outside_the_classes_fails_in_the_kernel():
    z, b = T(np.zeros((2, 5), np.float32)), T(np.zeros(5, np.float32))
    with pytest.raises(RuntimeError, match="SoftmaxNllForward"):
        fused_ops.FusedOps().softmax_nll(z, b, T(np.array([1, 5], np.int32))).asnumpy()


@needs_kernels
def test_the_library_is_built_once_per_source_and_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = fused_ops.library()
    assert first.parent == tmp_path / "attention_clusters" and first.is_file()
    assert fused_ops.library() == first and first.stat().st_mtime_ns == fused_ops.library().stat().st_mtime_ns
    edited = tmp_path / "fused_ops.cc"
    edited.write_text(fused_ops.SOURCE.read_text() + "\n// an edit\n")
    monkeypatch.setattr(fused_ops, "SOURCE", edited)
    assert fused_ops.library() != first  # a changed source is compiled again
    assert sorted(p.name for p in first.parent.iterdir() if not p.name.endswith(".so")) == []  # no temporaries left


def script(folder, name, text):
    """An executable shell script ``folder/name`` running ``text``."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    "cxx, why",
    [
        ("/nonexistent/c++", "asking the compiler its version: /nonexistent/c++: No such file or directory"),
        ("false", "asking the compiler its version failed (false): exit 1"),
        ("hang", "asking the compiler its version: {hang} gave no answer in 1 s"),
        ("garbage", "compiling fused_ops.cc: {garbage} wrote no fused_ops.o"),  # answers in non-UTF-8 bytes
    ],
)
def test_without_a_working_compiler_training_falls_back_to_mindspores_kernels(tmp_path, monkeypatch, cxx, why):
    scripts = {"hang": script(tmp_path, "hang", "sleep 30"), "garbage": script(tmp_path, "garbage", "printf '\\377'")}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", scripts.get(cxx, cxx))
    monkeypatch.setattr(fused_ops, "TIMEOUT_S", 1)
    ops_, name, reason = fused_ops.load("CPU")
    assert ops_ is None and name == "mindspore"
    assert reason.startswith("MindSpore's own kernels: fused ones unavailable"), reason
    assert why.format(**scripts) in reason, reason
    assert fused_ops.load("GPU")[:2] == (None, "mindspore")


@needs_kernels
def test_cxx_may_carry_a_wrapper_and_a_relative_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "env g++")  # as CXX="ccache g++"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # XDG: not absolute, so ~/.cache
    assert fused_ops.library().parent == tmp_path / ".cache" / "attention_clusters"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a:b"))  # MindSpore splits the operator's path at ':'
    with pytest.raises(fused_ops.Unavailable, match="a path with ':'"):
        fused_ops.library()


@needs_kernels
def test_loading_the_library_leaves_denormals_alone():
    """-ffast-math at link time would switch the whole process to flush-to-zero (crtfastmath.o)."""
    code = (
        "import numpy as np; from attention_clusters import fused_ops as f; f.library(); print(np.float32(1e-38) / 100)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) > 0


@needs_kernels
def test_inputs_of_the_wrong_kind_are_refused_before_the_kernel_runs():
    z, b = T(np.zeros((2, 5), np.float32)), T(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="labels must be int32, got Tensor\\[Int64\\]"):
        FUSED.softmax_nll(z, b, T(np.array([1, 2], np.int64)))
    with pytest.raises(ValueError, match=r"shapes \(N, K\), \(K,\), \(N,\) expected"):
        FUSED.softmax_nll(z, T(np.zeros(4, np.float32)), T(np.array([1, 2], np.int32)))
    w = T(np.ones((1, 5, 1), np.float32))
    with pytest.raises(ValueError, match="v \\(N, C, F\\) and C values"):
        FUSED.shift_norm(T(np.ones((2, 5), np.float32)), w, w)
    with pytest.raises(TypeError, match="float32 inputs expected"):
        FUSED.bias_tanh(T(np.ones((2, 5), np.float16)), T(np.ones(5, np.float16)))
    with pytest.raises(ValueError, match="scores \\(N, L, C\\) expected"):
        FUSED.frame_softmax(T(np.ones((2, 5), np.float32)))


@needs_kernels
def test_an_unwritable_cache_falls_back_and_a_broken_library_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("not a folder")
    ops_, name, reason = fused_ops.load("CPU")
    assert ops_ is None and name == "mindspore" and "a-file/attention_clusters" in reason, reason
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "one"))
    path = tmp_path / "two" / fused_ops.library().relative_to(tmp_path / "one")  # a path this process never loaded
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x7fELF truncated")  # e.g. a disk that filled up under another tool
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "two"))
    assert fused_ops.load("CPU")[1] == "fused"  # built again
    assert path.stat().st_size > 1000
