"""Stage export_mindir: the selected checkpoint as MINDIR and ONNX, each checked against it."""

import numpy as np

from attention_clusters import cli, device, export, params, paths, splits, storage, trained_model


def run():
    p = params.load()
    device.init("CPU")
    net, config = trained_model.load_model(paths.MODEL, expect={"fc": p.fc, "natt": p.natt})
    test_x = storage.load_npy(paths.feature_file("test"), mmap=True, ndim=3)
    splits.check_width(test_x, paths.feature_file("test"), sum(config["feature_dims"]))
    length, feature_dim = test_x.shape[1:]
    batch = np.zeros((p.export.batch_size, length, feature_dim), np.float32)
    shown = min(len(test_x), p.export.batch_size)
    batch[:shown] = test_x[:shown]
    report = {"batch_size": p.export.batch_size, "fc": config["fc"], "natt": config["natt"]}
    for file_format, suffix in export.FORMATS.items():
        path = paths.MODEL.with_suffix(suffix)
        export.export(net, p.export.batch_size, length, feature_dim, path, file_format)
        report[f"{file_format.lower()}_max_abs_diff"] = export.max_abs_difference(export.load_runner(path), net, batch)
    storage.write_json(paths.METRICS / "export.json", report)
    worst = max(report["mindir_max_abs_diff"], report["onnx_max_abs_diff"])
    return (
        f"wrote {paths.MODEL.with_suffix('.mindir')} and .onnx (batch "
        f"{p.export.batch_size}); max |export - checkpoint| {worst:.2e}"
    )


if __name__ == "__main__":
    cli.main("export_mindir", run)
