"""Exporting the trained Attention Cluster to MINDIR and ONNX, and checking the exports."""

from pathlib import Path

import mindspore as ms
import mindspore.onnx  # noqa: F401 (ms.onnx.export)
import numpy as np
from google.protobuf.message import DecodeError
from mindspore.train import mind_ir_pb2

from .batching import padded_batches
from .errors import UserError
from .storage import atomic_path

FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx"}
REMAKE = "re-export it: dvc repro -s export_mindir"
PHASE = b"export.mindir"  # MindSpore's phase name for a MINDIR export


def export(net, batch_size, length, feature_dim, path, file_format):
    """Export ``net`` (eval mode) for float32 input (batch_size, length, feature_dim) atomically.
    The same network and shape give the same bytes on every call (see :func:`_canonical_mindir`).

    Args:
        path: destination whose suffix matches the format (.mindir or .onnx).
        file_format: "MINDIR" or "ONNX".
    """
    net.set_train(False)
    example = ms.Tensor(np.zeros((batch_size, length, feature_dim), np.float32))
    with atomic_path(path) as tmp:
        if file_format == "ONNX":
            ms.onnx.export(net, example, file_name=str(tmp))
        else:
            ms.export(net, example, file_name=str(tmp), file_format=file_format)
            _canonical_mindir(Path(tmp))


def _canonical_mindir(path):
    """Rewrite the MINDIR at ``path`` so that its bytes depend on the network alone.

    MindSpore 2.10 writes two things that change from call to call: the graph's
    ``compile_phase`` attribute, the phase name with the compile time in ns and the network's
    ``id()`` appended (set here to the phase name alone, ``export.mindir``; a record of the
    compile, not read when the model is loaded or run), and the list of primitives in an order
    that varies between processes (sorted here by name; nodes refer to them by name).
    """
    model = mind_ir_pb2.ModelProto()
    model.ParseFromString(path.read_bytes())
    for attribute in model.graph.attribute:
        if attribute.name == "compile_phase":
            attribute.s = PHASE
    model.primitives.sort(key=lambda primitive: primitive.name)
    path.write_bytes(model.SerializeToString(deterministic=True))


class _Runner:
    """An exported model of fixed input shape (B, L, F), run on any number of samples.

    Call with float32 (N, L, F) numpy input, any N >= 1; returns float32 (N, 1024) logits. Inputs
    are split into batches of the exported B, the last one zero-padded, and the padding's rows
    dropped from the result, so the caller never has to match B.

    Attributes:
        path: the exported file; input_shape: its (B, L, F), B None when the file leaves it open.
    """

    def __init__(self, path, input_shape):
        self.path, self.input_shape = path, tuple(input_shape)

    def __call__(self, x):
        """Logits of float32 (N, L, F) ``x``: float32 (N, 1024).

        Raises:
            UserError: ``x`` is not (N, L, F) with N >= 1 and the exported L and F.
        """
        x = np.asarray(x, np.float32)
        batch, sample = self.input_shape[0], self.input_shape[1:]
        if x.ndim != len(self.input_shape) or x.shape[1:] != sample or len(x) == 0:
            expected = f"float32 input (N, {', '.join(map(str, sample))}) run in batches of {batch}"
            raise UserError(f"{self.path}: exported for {expected}, got shape {x.shape}")
        if batch is None:
            return self._run(x)
        return np.concatenate([self._run(chunk)[:real] for chunk, real in padded_batches(x, batch)])


class MindirRunner(_Runner):
    """Runs an exported MINDIR with MindSpore's own loader (``mindspore.load`` + ``nn.GraphCell``).

    Raises:
        UserError: the file is missing or not a MINDIR this MindSpore can load.
    """

    def __init__(self, path):
        _check_exists(path)
        try:
            self.cell = ms.nn.GraphCell(ms.load(str(path)))
            model = mind_ir_pb2.ModelProto()
            model.ParseFromString(Path(path).read_bytes())
            (tensor,) = model.graph.input[0].tensor
        except (RuntimeError, ValueError, IndexError, DecodeError) as err:
            raise UserError(f"{path}: cannot load the MINDIR ({type(err).__name__}); {REMAKE}") from err
        super().__init__(path, [int(d) for d in tensor.dims])

    def _run(self, x):
        return self.cell(ms.Tensor(x)).asnumpy()


class OnnxRunner(_Runner):
    """Runs an exported ONNX model with ONNX Runtime on the CPU; same call as :class:`MindirRunner`.

    Raises:
        UserError: the file is missing or ONNX Runtime cannot load it.
    """

    def __init__(self, path):
        import onnxruntime

        _check_exists(path)
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise UserError(f"{path}: cannot load the ONNX model ({type(err).__name__}); {REMAKE}") from err
        (first,) = self.session.get_inputs()
        self.input = first.name
        super().__init__(path, [d if isinstance(d, int) else None for d in first.shape])

    def _run(self, x):
        return self.session.run(None, {self.input: x})[0]


def load_runner(path):
    """A :class:`MindirRunner` or :class:`OnnxRunner` for an exported file, chosen by its suffix.

    Either takes float32 (N, L, F) of any N >= 1 (split and padded to the exported batch) and
    returns float32 (N, 1024) logits.

    Raises:
        UserError: the file is missing or cannot be loaded.
    """
    return MindirRunner(path) if Path(path).suffix == FORMATS["MINDIR"] else OnnxRunner(path)


def _check_exists(path):
    if not Path(path).is_file():
        raise UserError(f"{path}: not found (run the export_mindir stage first: dvc repro export_mindir)")


def max_abs_difference(runner, net, x):
    """Largest |runner(x) - net(x)| over a float32 batch x: float."""
    net.set_train(False)
    return float(np.abs(runner(x) - net(ms.Tensor(x)).asnumpy()).max())
