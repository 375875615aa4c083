"""Stage check: validates params.yaml as a whole whenever its text changes (a file dep in dvc.yaml).

Every stage validates params.yaml when it starts, but DVC starts only the stages whose declared
params changed, and to DVC some different texts are the same value (``fc: true`` equals ``fc: 1``,
``natt: 1.0`` equals ``natt: 1``) or no declared value at all (an unknown key). This stage sees the
text change, so such a file fails the run and no experiment is recorded with it. It also checks
that ``mnist.folder``, a dep of download_mnist whatever ``mnist.source``, is a folder.
"""

from pathlib import Path

from attention_clusters import cli, distributed, params
from attention_clusters.errors import UserError


def run():
    p = params.load()
    distributed.check_settings(p.distributed, p.device_target)
    if not Path(p.mnist.folder).is_dir():  # DVC would stop at download_mnist with "No such file" alone
        raise UserError(
            f"params.yaml: mnist.folder {p.mnist.folder!r} is not a folder; download_mnist depends on it whatever "
            "mnist.source (the default data/mnist_files/ comes with the repository)"
        )
    return "params.yaml valid"


if __name__ == "__main__":
    cli.main("check", run)
