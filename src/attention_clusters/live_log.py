"""DVCLive outputs of a training run, published only together with committed training state.

DVCLive writes into a private staging folder; :meth:`LiveLog.commit` copies its files
(``metrics.json``, ``plots/metrics/*.tsv``) into the DVC-tracked folder, each atomically. The
staging folder starts with the run's committed history replayed, so a resumed or already
finished run publishes complete outputs, and a run that fails before committing an epoch
leaves the published ones as they were.
"""

import tempfile
from pathlib import Path

from dvclive import Live

from .storage import atomic_write_bytes


class LiveLog:
    """Per-epoch metrics of one run for ``dvc metrics`` / ``dvc plots`` (rank 0 only).

    Args:
        out_dir: the DVC-tracked DVCLive folder (``dvclive/``).
        history: the committed per-epoch records so far (dicts with ``epoch`` and metrics).

    Use as a context manager (the staging folder is removed on exit).
    """

    def __init__(self, out_dir, history):
        self.out_dir = Path(out_dir)
        self._staging = tempfile.TemporaryDirectory(prefix="dvclive-")
        self._live = Live(self._staging.name, dvcyaml=False, save_dvc_exp=False)
        for record in history:
            self.log(record)

    def log(self, record):
        """Log one epoch's record: every key but ``epoch`` is a metric at the next step."""
        for key, value in record.items():
            if key != "epoch":
                self._live.log_metric(key, value)
        self._live.next_step()

    def commit(self):
        """Publish everything logged so far into ``out_dir``, file by file, atomically, and remove
        the files this run does not write (e.g. ``test_top1.tsv`` of an earlier run with
        ``report_test``)."""
        staging = Path(self._staging.name)
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                atomic_write_bytes(self.out_dir / path.relative_to(staging), path.read_bytes())
        for path in sorted(self.out_dir.rglob("*")):
            if path.is_file() and not (staging / path.relative_to(self.out_dir)).is_file():
                path.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._live.end()
        self._staging.cleanup()
