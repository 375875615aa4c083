"""Exporting the trained Attention Cluster to MINDIR and ONNX, and checking the exports."""

from pathlib import Path

import mindspore as ms
import mindspore.onnx  # noqa: F401 (ms.onnx.export)
import numpy as np

from .errors import UserError
from .storage import atomic_path

FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx"}


def export(net, batch_size, length, feature_dim, path, file_format):
    """Export ``net`` (eval mode) for float32 input (batch_size, length, feature_dim) atomically.

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


class MindirRunner:
    """Runs an exported MINDIR with MindSpore's own loader (``mindspore.load`` + ``nn.GraphCell``).

    Call with float32 (B, L, F) numpy input; returns float32 (B, 1024) logits.
    """

    def __init__(self, path):
        _check_exists(path)
        try:
            self.cell = ms.nn.GraphCell(ms.load(str(path)))
        except (RuntimeError, ValueError) as err:
            raise UserError(f"{path}: cannot load the MINDIR ({str(err).strip().splitlines()[0][:120]}); run dvc repro export_mindir") from None

    def __call__(self, x):
        return self.cell(ms.Tensor(x)).asnumpy()


class OnnxRunner:
    """Runs an exported ONNX model with ONNX Runtime on the CPU; same call as :class:`MindirRunner`."""

    def __init__(self, path):
        import onnxruntime

        _check_exists(path)
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise UserError(f"{path}: cannot load the ONNX model ({type(err).__name__}); run dvc repro export_mindir") from None
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):
        return self.session.run(None, {self.input: x})[0]


def load_runner(path):
    """A :class:`MindirRunner` or :class:`OnnxRunner` for an exported file, chosen by its suffix."""
    return MindirRunner(path) if Path(path).suffix == FORMATS["MINDIR"] else OnnxRunner(path)


def _check_exists(path):
    if not Path(path).is_file():
        raise UserError(f"{path}: not found (run the export_mindir stage first: dvc repro export_mindir)")


def max_abs_difference(runner, net, x):
    """Largest |runner(x) - net(x)| over a float32 batch x: float."""
    net.set_train(False)
    return float(np.abs(runner(x) - net(ms.Tensor(x)).asnumpy()).max())
