"""Running a process on some of the host's CPUs (``--cpus`` of scripts/sweep.py and bench/speed.py)."""

import os

from .errors import UserError


def pin(cpus):
    """Run this process and the processes it starts on ``cpus`` alone (Linux CPU affinity,
    inherited by child processes); MindSpore and PyTorch then size their thread pools to them
    (``device.init``).

    Args:
        cpus: non-empty sequence of int CPU ids.

    Raises:
        UserError: a CPU id this process may not use.
    """
    allowed = os.sched_getaffinity(0)
    wrong = [c for c in cpus if c not in allowed]
    if wrong:
        raise UserError(f"--cpus {' '.join(map(str, wrong))}: not a CPU this process may use ({sorted(allowed)})")
    os.sched_setaffinity(0, cpus)
