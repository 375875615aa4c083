"""Stage noisy: Noisy-MNIST, 11 classes (SPEC 3), for the feature extractor."""

from attention_clusters import cli, mnist, params, paths, storage, synth


def run():
    p = params.load()
    counts = mnist.read_provenance(paths.SOURCE_JSON)["counts"]
    noise, _ = synth.load_samplers(paths.SAMPLERS)
    sizes = {}
    for split in mnist.SPLITS:
        images, labels = mnist.read_split(paths.MNIST, split)
        noise_frames = synth.scaled_count(getattr(p.noisy, f"{split}_noise"), counts[split], mnist.FULL_COUNTS[split])
        seed = [p.noisy.seed, synth.SPLIT_CODES[split]]
        repeats = getattr(p.noisy, f"{split}_repeats")
        frames, targets = synth.noisy_mnist(images, labels, repeats, noise_frames, noise, seed)
        storage.save_npy(paths.noisy_file(split, "frames"), frames)
        storage.save_npy(paths.noisy_file(split, "labels"), targets)
        sizes[split] = {"frames": len(frames), "noise_frames": noise_frames, "repeats": repeats}
    storage.write_json(paths.METRICS / "noisy.json", sizes)
    return ", ".join(f"{split} {s['frames']:,} frames ({s['noise_frames']:,} pure noise)" for split, s in sizes.items())


if __name__ == "__main__":
    cli.main("noisy", run)
