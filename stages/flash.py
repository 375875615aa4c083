"""Stage flash: Flash-MNIST train / val / test videos and a preview PNG (SPEC 4)."""

import numpy as np
from tqdm import tqdm

from attention_clusters import cli, idx, mnist, params, paths, plots, storage, synth

POOLS = {"train": "train", "val": "train", "test": "test"}  # val videos reuse the train digits


def run():
    p = params.load()
    provenance = mnist.read_provenance(paths.SOURCE_JSON)
    noise, indexes = synth.load_samplers(paths.SAMPLERS)
    summary = {"source": provenance["source"], "full_mnist": provenance["full_mnist"]}
    for split, pool in POOLS.items():
        images, _ = mnist.read_split(paths.MNIST, pool)
        per_label = synth.scaled_count(
            getattr(p.flash, f"{split}_per_label"),
            provenance["counts"][pool],
            mnist.FULL_COUNTS[pool],
            p.flash.min_per_label,
        )
        code = synth.SPLIT_CODES[split]
        labels = synth.flash_labels(per_label, [p.flash.seed, code, 0])
        shape = (len(labels), synth.FRAMES, idx.ROWS, idx.COLS)
        with storage.npy_writer(paths.flash_file(split, "videos"), shape, np.uint8) as videos:
            with tqdm(total=len(labels), desc=f"flash {split}", unit="video") as bar:
                seed = [p.flash.seed, code, 1]
                synth.generate_flash(videos, labels, images, *indexes[pool], noise, seed, progress=bar.update)
            if split == "test":
                shown = slice(0, p.flash.preview_videos)
                plots.flash_preview(videos[shown], labels[shown], paths.FLASH_PREVIEW)
        storage.save_npy(paths.flash_file(split, "labels"), labels)
        summary[split] = {"videos": len(labels), "per_label": per_label}
    storage.write_json(paths.METRICS / "flash.json", summary)
    return ", ".join(f"{split} {summary[split]['videos']:,} videos" for split in POOLS) + f" from {summary['source']}"


if __name__ == "__main__":
    cli.main("flash", run)
