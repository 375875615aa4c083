"""Entry-point wrapper shared by every ``stages/<stage>.py`` script."""

import signal
import sys
import time

from . import inputs, recovery
from .errors import UserError


def main(stage, run, check_inputs=True):
    """Check the stage's inputs, then run ``run()``; a :class:`UserError` becomes one line on stderr.

    Args:
        stage: the stage's name in dvc.yaml, e.g. ``"flash"``: its deps are checked first
            (:func:`inputs.check`), so a missing input stops it before any work.
            Scripts that are not a stage (e.g. scripts/sweep.py) pass ``check_inputs=False``.
        run: a callable taking no arguments that returns a one-line summary string.

    Exits with status 1 on a :class:`UserError` (its line, then its ``details``) and 130 on
    Ctrl-C or SIGTERM. Either line ends with the command that restores the stage's previous
    outputs when some are missing (``dvc repro`` deletes them before it runs the stage; see
    :func:`recovery.restore_hint`). Ctrl-C and SIGTERM both raise ``KeyboardInterrupt``, so
    cleanup code runs (temporaries are removed, workers stopped). Any other exception is a bug
    in this project and keeps its traceback.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    start = time.perf_counter()
    try:
        if check_inputs:
            inputs.check(stage)
        summary = run()
    except UserError as err:
        details = [f"  {line}" for line in err.details]
        print(_with_recovery(f"{stage}: error: {err}", stage), *details, sep="\n", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(_with_recovery(f"{stage}: interrupted", stage), file=sys.stderr)
        sys.exit(130)
    print(f"{stage}: {summary} ({time.perf_counter() - start:.1f} s)")


def _with_recovery(line, stage):
    """``line`` with the recovery command for the stage's missing outputs appended, if any."""
    hint = recovery.restore_hint(stage)
    return f"{line}; {hint}" if hint else line


def _interrupt(signum, frame):
    """SIGTERM handler: stop the way Ctrl-C does."""
    raise KeyboardInterrupt
