"""Entry-point wrapper shared by every ``stages/<stage>.py`` script."""

import signal
import sys
import time

from . import inputs
from .errors import UserError


def main(stage, run, check_inputs=True):
    """Check the stage's inputs, then run ``run()``; a :class:`UserError` becomes one line on stderr.

    Args:
        stage: the stage's name in dvc.yaml, e.g. ``"flash"``: its deps are checked first
            (:func:`inputs.check`), so a missing input stops it before any work.
            Scripts that are not a stage (e.g. scripts/sweep.py) pass ``check_inputs=False``.
        run: a callable taking no arguments that returns a one-line summary string.

    Exits with status 1 on a :class:`UserError` and 130 on Ctrl-C or SIGTERM (both raise
    ``KeyboardInterrupt``, so cleanup code runs: temporaries are removed, workers stopped); any
    other exception is a bug in this project and keeps its traceback.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    start = time.perf_counter()
    try:
        if check_inputs:
            inputs.check(stage)
        summary = run()
    except UserError as err:
        print(f"{stage}: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{stage}: interrupted", file=sys.stderr)
        sys.exit(130)
    print(f"{stage}: {summary} ({time.perf_counter() - start:.1f} s)")


def _interrupt(signum, frame):
    """SIGTERM handler: stop the way Ctrl-C does."""
    raise KeyboardInterrupt
