"""The logs of a launched job: where each rank writes, what the launcher echoes, how a failure reads.

Every process the launcher starts writes its console output into the job's log folder
(:func:`rank_log` says where, per launcher). While the job runs, the launcher echoes rank 0's
per-epoch lines (:class:`Follower`) and reads msrun's report of a dead worker
(:func:`msrun_dead_worker`). When the job fails, :func:`worker_failure` or :func:`failure` make
the one-line :class:`UserError` naming the rank, how it ended and its log, with the log's last
lines as its details.
"""

import re
import signal
from pathlib import Path

from .errors import UserError

TAIL_LINES = 5  # lines of a failed worker's log shown under the error line
MSRUN_WORKER_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)\.")


def rank_log(dist, log_dir, rank):
    """The file (a Path inside ``log_dir``) that a rank's console output goes to under ``dist.launcher``."""
    if dist.launcher == "msrun":
        return log_dir / f"worker_{rank}.log"
    if dist.launcher == "mpirun":
        return log_dir / "1" / f"rank.{rank}" / "stdout"
    return log_dir / f"launcher_{rank}.log"


class Follower:
    """Reads a growing log line by line; echoes rank 0's per-epoch lines to the launcher's console."""

    PREFIXES = ("epoch ", "resuming ")

    def __init__(self, path):
        self.path, self.offset = path, 0

    def new_lines(self):
        """The complete lines written to the file since the last call (a list of str)."""
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode(errors="replace").splitlines()

    def echo(self):
        """Print rank 0's new epoch lines."""
        for line in self.new_lines():
            if line.startswith(self.PREFIXES):
                print(line, flush=True)


def msrun_dead_worker(lines):
    """``(pid, exit code)`` of the first worker msrun reports dead in ``lines`` of its log, or None.

    msrun logs ``Worker process <pid> exit with exception. Error code: <code>.``, the code being
    ``Popen.returncode`` (negative: killed by that signal).
    """
    for line in lines:
        match = MSRUN_WORKER_EXIT.search(line)
        if match:
            return int(match[1]), int(match[2])
    return None


def worker_failure(dist, log_dir, rank, code, unknown="a worker"):
    """The UserError for worker ``rank`` (None: not known, named ``unknown``) that ended with ``code``."""
    if rank is None:
        return failure(f"distributed training failed: {unknown} {exit_text(code)}", failed_log(log_dir, 0))
    return failure(f"distributed training failed: rank {rank} {exit_text(code)}", rank_log(dist, log_dir, rank))


def failure(message, log):
    """``UserError(message; log: <log>)``; its details: ``last lines of <log name>:`` and the log's short tail."""
    tail = short_tail(log)
    details = [f"last lines of {Path(log).name}:"] + [f"  {line}" for line in tail] if tail else []
    return UserError(f"{message}; log: {log}", details=details)


def exit_text(code):
    """How a process ended, from a ``Popen.returncode``: 'exited with code 1', 'was killed by signal 9 (SIGKILL)'."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = f" ({signal.Signals(-code).name})"
    except ValueError:  # a real-time signal has no name
        name = ""
    return f"was killed by signal {-code}{name}"


def failed_log(log_dir, index):
    """The most telling log: a worker's log with a Python traceback, else launcher process ``index``'s own."""
    for path in sorted(log_dir.rglob("*")):
        if path.is_file() and not path.name.startswith(("launcher_", "scheduler")):
            if "Traceback" in path.read_text(errors="replace"):
                return path
    return log_dir / f"launcher_{index}.log"


def short_tail(path, lines=TAIL_LINES):
    """The last ``lines`` non-blank lines of a log (list of str; [] if unreadable).

    When the log holds a Python traceback, the tail ends at its exception line (MindSpore
    appends a C++ stack after it).
    """
    try:
        text = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    starts = [k for k, line in enumerate(text) if line.startswith("Traceback (most recent call last)")]
    end = len(text)
    if starts:
        end = next((k + 1 for k in range(starts[-1] + 1, len(text)) if not text[k][0].isspace()), end)
    return text[max(0, end - lines) : end]
