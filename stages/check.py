"""Stage check: validates params.yaml as a whole whenever its text changes (a file dep in dvc.yaml).

Every stage validates params.yaml when it starts, but DVC starts only the stages whose declared
params changed, and to DVC some different texts are the same value (``fc: true`` equals ``fc: 1``,
``natt: 1.0`` equals ``natt: 1``) or no declared value at all (an unknown key). This stage sees the
text change, so such a file fails the run and no experiment is recorded with it.
"""

from attention_clusters import cli, distributed, params


def run():
    p = params.load()
    distributed.check_settings(p.distributed, p.device_target)
    return "params.yaml valid"


if __name__ == "__main__":
    cli.main("check", run)
