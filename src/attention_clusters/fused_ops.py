"""Fused CPU operators of the Attention Cluster's training step (``fused_ops.cc``).

MindSpore 2.10's CPU kernels for the small tensors of a training step at natt <= 8 cost far more
than their arithmetic (a 64 x 1,024 bias gradient ~140 us, a log-softmax ~85 us on a 2-core EPYC;
``bench/speed.py`` prints the busiest kernels of a step). Four pairs of C++ kernels replace
chains of them, as MindSpore AOT custom operators (``ops.Custom(func_type="aot")``) with their
gradients attached:

* ``softmax_nll``: bias, log-softmax and the label's negative log-likelihood
  (SPEC 7), in place of BiasAdd, LogSoftmax, GatherD, Neg and their gradients (BiasAddGrad,
  LogSoftmaxGrad, GatherDGrad);
* ``shift_norm``: the shifting operation's affine map, L2 normalisation and
  1/sqrt(C) scale (paper section 3.3, SPEC 6), in place of ~20 element-wise and reduction kernels;
* ``bias_tanh``: the fc=2 scoring network's bias and tanh, in place of BiasAdd, Tanh and their
  gradients (BiasAddGrad, TanhGrad);
* ``frame_softmax``: the attention weights' softmax over frames with its transpose, in place of
  Transpose, Softmax and their gradients (Transpose, ReduceSum, Sub, Mul).

They compute the formulas of ``models/attention_cluster.py`` and ``train_step.py`` (equal up to
float32 rounding, tests/test_fused_ops.py), on one thread in a fixed order, so a training run
stays bit-reproducible. The library is compiled on first use with the host's C++ compiler
(``$CXX``, else ``g++``, else ``c++``) for the host's CPU (``-march=native``) and kept in
``$XDG_CACHE_HOME/attention_clusters`` (default ``~/.cache``) under a hash of the source, the
flags, the compiler and the target ``native`` means to it (its predefined macros). Without a compiler, training uses
MindSpore's own kernels (:func:`load` says why).
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mindspore import nn, ops

SOURCE = Path(__file__).with_suffix(".cc")
FLAGS = ("-std=c++17", "-O3", "-march=native", "-ffast-math", "-shared", "-fPIC")


class Unavailable(Exception):
    """The fused operators cannot be built on this host (message: why)."""


def _compiler():
    found = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not found:
        raise Unavailable("no C++ compiler (set CXX, or install g++)")
    return found


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        lines = (getattr(err, "stderr", None) or str(err)).strip().splitlines()
        raise Unavailable(f"{' '.join(cmd[:2])} failed: {lines[-1] if lines else err}") from None


def library():
    """Path of the compiled ``fused_ops.cc`` for this host, compiling it if the cache lacks it.

    Raises:
        Unavailable: no compiler, it fails on the source, the cache folder is not writable, or
            the library does not load.
    """
    cxx = _compiler()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode()):
        key.update(part + b"\0")
    key.update(_run([cxx, "--version"]).encode())
    key.update(_run([cxx, *FLAGS[:3], "-dM", "-E", "-x", "c++", os.devnull]).encode())  # what native means here
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attention_clusters"
    path = cache / f"fused_ops-{key.hexdigest()[:16]}.so"
    try:
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                built = Path(tmp) / path.name
                _run([cxx, *FLAGS, "-o", str(built), str(SOURCE)])
                os.replace(built, path)  # atomic: concurrent processes see the whole library or none
        ctypes.CDLL(str(path))  # loads, with what it links (glibc's vector maths)
    except OSError as err:
        raise Unavailable(f"{path}: {err.strerror or err}") from None
    return path


class _First(nn.Cell):
    """A fused operator's first output (its second is kept for the gradient only)."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, *inputs):
        return self.op(*inputs)[0]


class FusedOps:
    """The fused operators, built from :func:`library` (see the module docstring).

    Attributes:
        softmax_nll: Cell ``(z, b, y) -> nll``: z float32 (N, K) logits without the bias, b
            float32 (K,), y int32 (N,) in [0, K); nll float32 (N,) = ``logsumexp(z_n + b) -
            (z_n + b)[y_n]``, the per-sample cross-entropy of SPEC 7. A label outside [0, K)
            makes the kernel fail (MindSpore raises).
        shift_norm: Cell ``(v, w, b) -> o``: v float32 (N, C, F) attention-pooled features, w
            and b float32 holding C values each (``ShiftingAttention``'s (1, C, 1) parameters);
            o float32 (N, C, F) = ``u / max(||u||_2, 1e-12) / sqrt(C)`` with ``u = w_c v + b_c``
            over the last axis, the shifting operation (paper section 3.3, SPEC 6).
        bias_tanh: primitive ``(z, b) -> tanh(z + b)``: z float32 (M, H), b float32 (H,); the
            hidden layer of the fc=2 scoring network after its product.
        frame_softmax: primitive ``s -> a``: s float32 (N, L, C) scores, a float32 (N, C, L)
            with ``a[n, c] = softmax(s[n, :, c])``, the attention weights (SPEC 6).

    Raises:
        Unavailable: as :func:`library`.
    """

    def __init__(self):
        lib = library()

        def op(name, out_shape, out_dtype, bprop=None):
            return ops.Custom(f"{lib}:{name}", out_shape, out_dtype, func_type="aot", bprop=bprop)

        nll_grad = op("SoftmaxNllBackward", lambda p, y, g: (p, [p[1]]), lambda p, y, g: (p, p))

        def nll_bprop(z, b, y, out, dout):
            dz, db = nll_grad(out[1], y, dout[0])
            return dz, db, ops.zeros_like(y)

        nll = op("SoftmaxNllForward", lambda z, b, y: ([z[0]], z), lambda z, b, y: (z, z), nll_bprop)
        shift_grad = op("ShiftNormBackward", lambda g, v, w, b, r: (v, w, b), lambda g, v, w, b, r: (v, w, b))

        def shift_bprop(v, w, b, out, dout):
            return shift_grad(dout[0], v, w, b, out[1])

        shift = op("ShiftNormForward", lambda v, w, b: (v, v[:2]), lambda v, w, b: (v, v), shift_bprop)
        tanh_grad = op("BiasTanhBackward", lambda t, g: (t, [t[1]]), lambda t, g: (t, t))

        def tanh_bprop(z, b, out, dout):
            return tanh_grad(out, dout)

        softmax_grad = op("FrameSoftmaxBackward", lambda a, g: [a[0], a[2], a[1]], lambda a, g: a)

        def softmax_bprop(s, out, dout):
            return (softmax_grad(out, dout),)

        self.softmax_nll, self.shift_norm = _First(nll), _First(shift)
        self.bias_tanh = op("BiasTanhForward", lambda z, b: z, lambda z, b: z, tanh_bprop)
        self.frame_softmax = op("FrameSoftmaxForward", lambda s: [s[0], s[2], s[1]], lambda s: s, softmax_bprop)


def load(device_target):
    """The kernels a training step on ``device_target`` uses: ``(ops, name, why)``.

    ``ops`` is a :class:`FusedOps` on "CPU" where the library builds, else None (MindSpore's own
    kernels); ``name`` is "fused" or "mindspore" (recorded with the model and in the resume
    fingerprint: the two agree up to float32 rounding only); ``why`` says, in a few words, why.
    """
    if device_target != "CPU":
        return None, "mindspore", f"fused kernels are CPU-only, the device is {device_target}"
    try:
        return FusedOps(), "fused", f"fused CPU kernels ({SOURCE.name})"
    except Unavailable as err:
        return None, "mindspore", f"MindSpore's own kernels: fused ones unavailable ({err})"
