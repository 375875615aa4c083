"""Stage eval: test-split accuracy of the selected checkpoint, every test video counted."""

import numpy as np

from attention_clusters import (
    batching,
    cli,
    device,
    evaluation,
    inputs,
    mnist,
    params,
    paths,
    plots,
    splits,
    storage,
    trained_model,
)
from attention_clusters.models.attention_cluster import AttentionWeights

SHOWN = 4  # test videos in the attention picture


def run():
    p = params.load()
    device.init(p.device_target)
    net, config = trained_model.load_model(paths.MODEL, expect={"fc": p.fc, "natt": p.natt})
    test_x, test_y = splits.load_split(
        paths.feature_file("test"), paths.flash_file("test", "labels"), sum(config["feature_dims"])
    )
    logits = batching.predict(net, test_x, trained_model.EVAL_BATCH)
    provenance = mnist.read_provenance(paths.SOURCE_JSON)
    top1 = evaluation.accuracy(logits, test_y, 1)
    report = {
        "top1": round(top1, 4),
        "top5": round(evaluation.accuracy(logits, test_y, 5), 4),
        "test_videos": len(test_y),
        "fc": config["fc"],
        "natt": config["natt"],
        "epochs": config["epochs"],
        "best_epoch": config["best_epoch"],
        "best_val_top1": config.get("best_val_top1"),
        "train_minutes": config.get("train_minutes"),
        "train_kernels": config.get("train_kernels"),
        "source": provenance["source"],
        "full_mnist": provenance["full_mnist"],
        "code_version": inputs.code_version("eval"),  # digest of the code of eval and every stage upstream
        "top1_by_digit_count": evaluation.top1_by_digit_count(logits, test_y),
    }
    storage.write_json(paths.METRICS / "eval.json", report)
    storage.save_npy(paths.PREDICTIONS, np.argmax(logits, axis=1).astype(np.int16))

    weights = batching.predict(AttentionWeights(net), test_x[:SHOWN], SHOWN)
    videos = storage.load_npy(paths.flash_file("test", "videos"), mmap=True)[:SHOWN]
    titles = [plots.prediction_title(pred, label) for pred, label in zip(np.argmax(logits[:SHOWN], axis=1), test_y)]
    plots.attention_figure(videos, weights, titles, paths.ATTENTION_PNG)
    scope = "full MNIST" if provenance["full_mnist"] else provenance["source"]
    return (
        f"test top-1 {top1:.2f} % (top-5 {report['top5']:.2f} %) on {len(test_y):,} "
        f"videos, fc={config['fc']} natt={config['natt']} [{scope}]"
    )


if __name__ == "__main__":
    cli.main("eval", run)
