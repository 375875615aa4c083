"""Stage check: runs on every `dvc repro` and `dvc exp run` (always_changed in dvc.yaml).

Validates params.yaml as a whole, so a value DVC sees as unchanged (``fc: true`` equals
``fc: 1`` to DVC, ``natt: 1.0`` equals ``natt: 1``) or an unknown key fails the run and no
experiment is recorded with it; and writes the content digest of the ``mnist.source`` folder,
a dependency of download_mnist, so replacing the files in that folder re-runs the pipeline.
"""

from attention_clusters import cli, distributed, mnist, params, paths, storage


def run():
    p = params.load()
    distributed.check_settings(p.distributed, p.device_target)
    digest = mnist.source_digest(p.mnist.source)
    storage.write_json(paths.SOURCE_DIGEST, digest)
    return f"params.yaml valid; MNIST source {digest['source']} ({len(digest.get('sha256', {}))} files digested)"


if __name__ == "__main__":
    cli.main("check", run)
