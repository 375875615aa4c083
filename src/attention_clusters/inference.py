"""The ModelZoo's Ascend 310 inference flow, run through MindSpore or ONNX Runtime.

preprocess: test features to flat float32 binary files of one export batch each (the last
padded with zeros) plus the labels as int32; run: each batch file through the exported model to
a result file of float32 logits; postprocess: top-1 over every real test sample.
"""

import shutil
import time
from pathlib import Path

import numpy as np

from .batching import padded_batches
from .storage import atomic_write_bytes


def preprocess(features, labels, batch_size, out_dir):
    """Write ``batch_NNNNN.bin`` (float32 (batch_size, L, F), C order) and ``labels.bin`` (int32).

    Returns:
        the list of batch file paths, in order.
    """
    shutil.rmtree(out_dir, ignore_errors=True)  # no stale batches from an earlier batch size
    input_dir = Path(out_dir) / "input"
    input_dir.mkdir(parents=True)
    files = []
    for k, (batch, _) in enumerate(padded_batches(features, batch_size)):
        files.append(input_dir / f"batch_{k:05d}.bin")
        atomic_write_bytes(files[-1], np.ascontiguousarray(batch, np.float32).tobytes())
    atomic_write_bytes(Path(out_dir) / "labels.bin", np.asarray(labels, np.int32).tobytes())
    return files


def run(runner, files, sample_shape, out_dir, progress=None):
    """Run each batch file through ``runner``; write ``result/batch_NNNNN.bin`` float32 logits.

    Returns:
        per-batch latency in milliseconds, float64 (number of files,).
    """
    result_dir = Path(out_dir) / "result"
    result_dir.mkdir(parents=True, exist_ok=True)
    latencies = []
    for path in files:
        x = np.fromfile(path, dtype=np.float32).reshape((-1,) + tuple(sample_shape))
        start = time.perf_counter()
        logits = runner(x)
        latencies.append((time.perf_counter() - start) * 1000.0)
        atomic_write_bytes(result_dir / path.name, np.ascontiguousarray(logits, np.float32).tobytes())
        if progress is not None:
            progress(1)
    return np.array(latencies)


def postprocess(out_dir, num_classes):
    """Read the result files back: top-1 class of every real sample and the labels.

    Returns:
        ``(predictions, labels)``: int64 (N,) and int32 (N,), padding rows dropped.
    """
    labels = np.fromfile(Path(out_dir) / "labels.bin", dtype=np.int32)
    results = sorted((Path(out_dir) / "result").glob("batch_*.bin"))
    logits = np.concatenate([np.fromfile(path, dtype=np.float32).reshape(-1, num_classes) for path in results])
    return np.argmax(logits[: len(labels)], axis=1), labels
