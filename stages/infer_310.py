"""Stage infer_310: the ModelZoo's 310 inference flow on the exported model (preprocess, run,
postprocess) through MindSpore (MINDIR, on infer.device) or ONNX Runtime (infer.backend).

The exported model's test predictions must equal the eval stage's (models/test_predictions.npy)
video for video: the stage fails otherwise, so metrics/infer.json exists only for an export
that agrees with the checkpoint."""

import numpy as np
from tqdm import tqdm

from attention_clusters import cli, device, errors, export, inference, params, paths, splits, storage
from attention_clusters.models.attention_cluster import NUM_CLASSES


def run():
    p = params.load()
    test_x, test_y = splits.load_split(paths.feature_file("test"), paths.flash_file("test", "labels"))
    eval_predictions = storage.load_npy(paths.PREDICTIONS, ndim=1)
    if len(eval_predictions) != len(test_y):
        raise errors.UserError(
            f"{paths.PREDICTIONS}: {len(eval_predictions)} predictions "
            f"for {len(test_y)} test videos; run dvc repro eval"
        )
    exported = storage.read_json(paths.METRICS / "export.json")
    batch_size = p.export.batch_size
    if not isinstance(exported, dict) or exported.get("batch_size") != batch_size:
        found = exported.get("batch_size") if isinstance(exported, dict) else None
        raise errors.UserError(
            f"{paths.METRICS / 'export.json'}: the exported model is for batch {found}, "
            f"export.batch_size is {batch_size}; re-export it: dvc repro -s export_mindir"
        )
    file_format = "ONNX" if p.infer.backend == "onnxruntime" else "MINDIR"
    if file_format == "MINDIR":
        device.init(p.infer.device)
    runner = export.load_runner(paths.MODEL.with_suffix(export.FORMATS[file_format]))
    files = inference.preprocess(test_x, test_y, batch_size, paths.INFER)
    with tqdm(total=len(files), desc="infer", unit="batch") as bar:
        latencies = inference.run(runner, files, test_x.shape[1:], paths.INFER, progress=bar.update)
    predictions, labels = inference.postprocess(paths.INFER, NUM_CLASSES)
    differ = int((predictions != eval_predictions).sum())
    if differ:
        raise errors.UserError(
            f"{differ} of {len(labels)} predictions differ from the eval stage's ({paths.PREDICTIONS})"
        )
    top1 = 100.0 * float((predictions == labels).mean())
    report = {
        "top1": round(top1, 4),
        "test_videos": len(labels),
        "backend": p.infer.backend,
        "device": "CPU" if p.infer.backend == "onnxruntime" else p.infer.device,
        "batch_size": batch_size,
        "latency_ms_median": round(float(np.median(latencies)), 3),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 3),
        "videos_per_s": round(len(labels) / (latencies.sum() / 1000.0), 1),
    }
    storage.write_json(paths.METRICS / "infer.json", report)
    return (
        f"top-1 {top1:.2f} % on {len(labels):,} videos via {p.infer.backend}, "
        f"equal to eval; median batch latency {report['latency_ms_median']:.2f} ms"
    )


if __name__ == "__main__":
    cli.main("infer_310", run)
