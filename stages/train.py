"""Stage train: the Attention Cluster on Flash-MNIST features, best epoch chosen on validation."""

from dvclive import Live

from attention_clusters import cli, device, params, paths, storage, training


def run():
    p = params.load()
    device.init(p.device_target, seed=p.seed)
    train_x = storage.load_npy(paths.feature_file("train"))
    train_y = storage.load_npy(paths.flash_file("train", "labels"))
    val_x = storage.load_npy(paths.feature_file("val"))
    val_y = storage.load_npy(paths.flash_file("val", "labels"))
    fp = training.fingerprint(p, 1, [paths.feature_file("train"), paths.flash_file("train", "labels")])
    state = training.load_state(paths.TRAIN_STATE, fp)
    with Live(str(paths.DVCLIVE), resume=state["epoch"] > 0, dvcyaml=False, save_dvc_exp=False) as live:
        trainer = training.Trainer(p, train_x, train_y, val_x, val_y, paths.TRAIN_STATE, live=live)
        state = trainer.fit(state)
    training.publish(paths.TRAIN_STATE, paths.MODEL, training.model_config(p, (train_x.shape[2],)), state)
    return (
        f"fc={p.fc} natt={p.natt}: best val top-1 {state['best_val_top1']:.2f} % at epoch "
        f"{state['best_epoch']}/{state['epoch']}, saved {paths.MODEL}"
    )


if __name__ == "__main__":
    cli.main("train", run)
