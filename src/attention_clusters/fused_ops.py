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
import math
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.dtype import TensorType

SOURCE = Path(__file__).with_suffix(".cc")
COMPILE = ("-std=c++17", "-O3", "-march=native", "-ffast-math", "-fPIC")
# linked without -ffast-math: with it GCC < 13 links crtfastmath.o, which would switch the whole
# process to flush-to-zero; -lm brings glibc's vector maths (libmvec) with any compiler driver
LINK = ("-shared", "-lm")
KERNELS = (
    "SoftmaxNllForward",
    "SoftmaxNllBackward",
    "ShiftNormForward",
    "ShiftNormBackward",
    "BiasTanhForward",
    "BiasTanhBackward",
    "FrameSoftmaxForward",
    "FrameSoftmaxBackward",
)
TIMEOUT_S = 300  # a compiler step that takes longer is given up (the stage goes on without it)


class Unavailable(Exception):
    """The fused operators cannot be built on this host (message: why)."""


def _compiler():
    """The compiler command: ``$CXX`` split as a shell would (e.g. ``ccache g++``), else g++ or c++."""
    cxx = shlex.split(os.environ.get("CXX", ""))
    if cxx:
        return cxx
    found = shutil.which("g++") or shutil.which("c++")
    if not found:
        raise Unavailable("no C++ compiler (set CXX, or install g++)")
    return [found]


def _run(cmd, step):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{step}: {cmd[0]} gave no answer in {TIMEOUT_S} s") from None
    except OSError as err:
        raise Unavailable(f"{step}: {cmd[0]}: {err.strerror or err}") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
        raise Unavailable(f"{step} failed ({cmd[0]}): {' / '.join(errors[:3]) or f'exit {done.returncode}'}")
    return done.stdout


def _cache():
    """``$XDG_CACHE_HOME/attention_clusters``; a relative or unset value means ``~/.cache`` (XDG)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        try:
            base = Path.home() / ".cache"
        except RuntimeError:
            raise Unavailable("no home folder for the kernel cache (set XDG_CACHE_HOME)") from None
    return Path(base) / "attention_clusters"


def _build(cxx, path):
    """Compile and link ``SOURCE`` into ``path``, atomically (a concurrent process sees all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix="build-") as tmp:
        obj, built = Path(tmp) / "fused_ops.o", Path(tmp) / path.name
        for step, cmd, out in (
            ("compiling fused_ops.cc", [*cxx, *COMPILE, "-c", "-o", str(obj), str(SOURCE)], obj),
            ("linking fused_ops.cc", [*cxx, "-o", str(built), str(obj), *LINK], built),
        ):
            _run(cmd, step)
            if not out.is_file():
                raise Unavailable(f"{step}: {cxx[0]} wrote no {out.name}")
        os.replace(built, path)


def _loads(path):
    """Whether ``path`` loads and holds every kernel (a failed or foreign library does not)."""
    try:
        lib = ctypes.CDLL(str(path))
        return all(hasattr(lib, name) for name in KERNELS)
    except OSError:
        return False


def library():
    """Path of the compiled ``fused_ops.cc`` for this host, compiling it if the cache lacks it.

    A cached library that does not load (e.g. truncated) is built again, once.

    Raises:
        Unavailable: no compiler, it fails or hangs, the cache folder is not writable, or the
            library does not load.
    """
    cxx = _compiler()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(COMPILE + LINK).encode()):
        key.update(part + b"\0")
    key.update(_run([*cxx, "--version"], "asking the compiler its version").encode())
    macros = _run([*cxx, *COMPILE[:3], "-dM", "-E", "-x", "c++", os.devnull], "asking the compiler its target")
    key.update(macros.encode())  # what native means here
    path = _cache() / f"fused_ops-{key.hexdigest()[:16]}.so"
    if ":" in str(path):
        raise Unavailable(f"{path}: MindSpore cannot load an operator from a path with ':' (set XDG_CACHE_HOME)")
    try:
        if not path.exists() or not _loads(path):
            _build(cxx, path)
    except OSError as err:
        raise Unavailable(f"{err.filename or path}: {err.strerror or err}") from None
    if not _loads(path):
        raise Unavailable(f"{path} does not load or lacks its kernels; delete it to build it again")
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
        f32, i32 = TensorType(ms.float32), TensorType(ms.int32)  # as shape inference sees tensors

        def op(name, out_shape, out_dtype, bprop=None):
            try:
                return ops.Custom(f"{lib}:{name}", out_shape, out_dtype, func_type="aot", bprop=bprop)
            except (TypeError, ValueError, RuntimeError) as err:  # e.g. MS_CUSTOM_AOT_WHITE_LIST
                raise Unavailable(f"MindSpore refused {name}: {err}") from None

        def floats(what, *dtypes):
            """Shape inference's dtype check of a forward operator: every input float32."""
            if any(dtype != f32 for dtype in dtypes):
                raise TypeError(f"fused_ops.{what}: float32 inputs expected, got {', '.join(map(str, dtypes))}")

        def nll_shape(z, b, y):
            if len(z) != 2 or list(b) != [z[1]] or list(y) != [z[0]]:
                raise ValueError(f"fused_ops.softmax_nll: shapes (N, K), (K,), (N,) expected, got {z}, {b}, {y}")
            return [z[0]], z

        def nll_dtype(z, b, y):
            if y != i32:
                raise TypeError(f"fused_ops.softmax_nll: labels must be int32, got {y}")
            floats("softmax_nll", z, b)
            return f32, f32

        def shift_shape(v, w, b):
            if len(v) != 3 or math.prod(w) != v[1] or math.prod(b) != v[1]:
                raise ValueError(f"fused_ops.shift_norm: v (N, C, F) and C values in w, b expected, got {v}, {w}, {b}")
            return v, v[:2]

        def shift_dtype(v, w, b):
            floats("shift_norm", v, w, b)
            return f32, f32

        def tanh_shape(z, b):
            if len(z) != 2 or list(b) != [z[1]]:
                raise ValueError(f"fused_ops.bias_tanh: shapes (M, H), (H,) expected, got {z}, {b}")
            return z

        def tanh_dtype(z, b):
            floats("bias_tanh", z, b)
            return f32

        def softmax_shape(s):
            if len(s) != 3:
                raise ValueError(f"fused_ops.frame_softmax: scores (N, L, C) expected, got shape {s}")
            return [s[0], s[2], s[1]]

        def softmax_dtype(s):
            floats("frame_softmax", s)
            return f32

        # the gradients: shapes and dtypes follow from their forward's, checked there
        nll_grad = op("SoftmaxNllBackward", lambda p, y, g: (p, [p[1]]), lambda p, y, g: (f32, f32))
        shift_grad = op("ShiftNormBackward", lambda g, v, w, b, r: (v, w, b), lambda g, v, w, b, r: (f32,) * 3)
        tanh_grad = op("BiasTanhBackward", lambda t, g: (t, [t[1]]), lambda t, g: (f32, f32))
        softmax_grad = op("FrameSoftmaxBackward", lambda a, g: [a[0], a[2], a[1]], lambda a, g: f32)

        def nll_bprop(z, b, y, out, dout):
            dz, db = nll_grad(out[1], y, dout[0])
            return dz, db, ops.zeros_like(y)

        def shift_bprop(v, w, b, out, dout):
            return shift_grad(dout[0], v, w, b, out[1])

        def tanh_bprop(z, b, out, dout):
            return tanh_grad(out, dout)

        def softmax_bprop(s, out, dout):
            return (softmax_grad(out, dout),)

        self.softmax_nll = _First(op("SoftmaxNllForward", nll_shape, nll_dtype, nll_bprop))
        self.shift_norm = _First(op("ShiftNormForward", shift_shape, shift_dtype, shift_bprop))
        self.bias_tanh = op("BiasTanhForward", tanh_shape, tanh_dtype, tanh_bprop)
        self.frame_softmax = op("FrameSoftmaxForward", softmax_shape, softmax_dtype, softmax_bprop)


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
