"""Stage sample: the noise pixel histogram and the per-class digit index of each split (SPEC 2)."""

import numpy as np

from attention_clusters import cli, mnist, paths, storage, synth


def run():
    splits = {split: mnist.read_split(paths.MNIST, split) for split in mnist.SPLITS}
    hist = synth.pixel_histogram(*(images for images, _ in splits.values()))
    indexes = {split: synth.class_index(labels) for split, (_, labels) in splits.items()}
    synth.save_samplers(paths.SAMPLERS, hist, indexes)
    per_class = {split: np.diff(starts).tolist() for split, (_, starts) in indexes.items()}
    zero_fraction = round(float(hist[0] / hist.sum()), 6)
    storage.write_json(
        paths.METRICS / "sample.json",
        {"pixels": int(hist.sum()), "zero_pixel_fraction": zero_fraction, "digits_per_class": per_class},
    )
    return f"histogram of {hist.sum():,} pixels ({zero_fraction:.1%} zero), digits per class {per_class}"


if __name__ == "__main__":
    cli.main("sample", run)
