"""Stage download_mnist: the four raw MNIST IDX files and their provenance in data/mnist/."""

from attention_clusters import cli, mnist, mnist_sources, params, paths


def run():
    p = params.load()
    description, files = mnist_sources.acquire(
        p.mnist.source, p.mnist.folder, p.mnist.timeout_s, p.mnist.retries, paths.MNIST
    )
    provenance = mnist.write_dataset(files, description, paths.MNIST)
    counts = provenance["counts"]
    kind = "full MNIST" if provenance["full_mnist"] else "NOT full MNIST"
    return f"{counts['train']} train + {counts['test']} test digits from {description} ({kind})"


if __name__ == "__main__":
    cli.main("download_mnist", run)
