"""Stage train: the Attention Cluster on Flash-MNIST features, best epoch chosen on validation.

With ``distributed.launcher`` set, this script starts its own workers through that launcher
(see attention_clusters.launcher) and each worker runs the training below.
"""

import contextlib

from attention_clusters import (
    cli,
    device,
    distributed,
    fused_ops,
    launcher,
    params,
    paths,
    resume,
    splits,
    storage,
    trained_model,
    training,
)
from attention_clusters.live_log import LiveLog
from attention_clusters.models.extractor import FEATURE_DIM


def train(p, rank, world_size):
    train_x, train_y = splits.load_split(paths.feature_file("train"), paths.flash_file("train", "labels"), FEATURE_DIM)
    val_x, val_y = splits.load_split(paths.feature_file("val"), paths.flash_file("val", "labels"), FEATURE_DIM)
    test = (
        splits.load_split(paths.feature_file("test"), paths.flash_file("test", "labels"), FEATURE_DIM)
        if p.report_test
        else None
    )
    fused, kernels, why = fused_ops.load(p.device_target)
    fp = resume.fingerprint(p, world_size, kernels)
    state = resume.load_state(paths.TRAIN_STATE, fp, p.epochs)
    with LiveLog(paths.DVCLIVE, state["history"]) if rank == 0 else contextlib.nullcontext() as live:
        log = print if rank == 0 else (lambda line: None)
        log(f"training step: {why}")
        saved = resume.saved_epoch(paths.TRAIN_STATE)
        if saved and not state["epoch"]:
            log(
                f"{paths.TRAIN_STATE}: its state (epoch {saved}) is from other code, data, params, kernels or "
                "more epochs, so it is not resumed: training starts at epoch 1"
            )
        trainer = training.Trainer(
            p, train_x, train_y, val_x, val_y, paths.TRAIN_STATE, rank, world_size, live, log, test, fused
        )
        state = trainer.fit(state)
        if rank == 0:
            live.commit()  # complete outputs also when no epoch was left to run
            config = dict(trained_model.model_config(p, (train_x.shape[2],)), train_kernels=kernels)
            trained_model.publish(paths.TRAIN_STATE, paths.MODEL, config, state)


def run():
    p = params.load()
    distributed.check_settings(p.distributed, p.device_target)
    if p.distributed.launcher != "none" and not distributed.is_worker():
        launcher.launch(p.distributed, __file__, paths.TRAIN_LOGS)
        node = p.distributed.node_rank
        if node != 0:
            done = f"its {p.distributed.workers} worker(s) done"
            return f"node {node} of {p.distributed.nodes}: {done}; node 0 saves the model"
    else:
        device.init(p.device_target, seed=p.seed, processes=p.distributed.workers)
        rank, world_size = distributed.init_worker(p.device_target, p.distributed.master_port)
        train(p, rank, world_size)
        if rank != 0:
            return f"rank {rank} of {world_size} done"
    info = storage.read_json(paths.MODEL.with_suffix(".json"))
    return (
        f"fc={info['fc']} natt={info['natt']}: best val top-1 {info['best_val_top1']:.2f} % at epoch "
        f"{info['best_epoch']}/{info['epochs']} ({distributed.total_workers(p.distributed)} worker(s)), "
        f"saved {paths.MODEL}"
    )


if __name__ == "__main__":
    cli.main("train", run)
