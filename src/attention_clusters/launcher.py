"""Starting and supervising the workers of a data-parallel job (msrun, mpirun, HCCL rank table).

With ``distributed.launcher`` other than ``none`` the train stage calls :func:`launch`: it
starts the launcher's processes (:func:`worker_commands`), each marked with
:data:`.distributed.WORKER_ENV`, waits for them, and exits non-zero when any worker dies, in
one line naming its rank, its exit code or signal and its log (msrun's report of the dead
worker's pid is matched with the ranks seen running; the wording is :mod:`.worker_logs`').

The launcher owns every process it starts, including workers that leave its session (msrun
starts each worker with ``setsid``): it becomes their subreaper, and one shutdown path
(:func:`_shutdown`) stops them all when the job ends, fails or is interrupted (Ctrl-C or
SIGTERM), so no worker outlives the stage.
"""

import contextlib
import ctypes
import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from . import worker_logs
from .distributed import NODE_RANK_ENV, WORKER_ENV, total_workers
from .errors import UserError
from .rank_table import read_rank_table

SCHEDULER_HOST = "127.0.0.1"
STOP_GRACE_S = 20  # seconds a stopped process gets to exit before SIGKILL
SCHEDULER_GRACE_S = 10  # seconds workers may outlive their scheduler before the job is failed
_PR_SET_CHILD_SUBREAPER = 36


def worker_commands(dist, script, log_dir):
    """The processes a launcher starts: list of ``(argv, extra_env)``.

    msrun and mpirun are one process each (they spawn the workers); msrun's gets this node's
    rank in :data:`.distributed.NODE_RANK_ENV`. rank_table is one process per device with RANK_TABLE_FILE,
    RANK_SIZE, RANK_ID and DEVICE_ID set, as the ModelZoo scripts do.
    """
    python = [sys.executable, script]
    if dist.launcher == "msrun":
        argv = [
            "msrun",
            f"--worker_num={total_workers(dist)}",
            f"--local_worker_num={dist.workers}",
            f"--master_addr={dist.master_addr}",
            f"--master_port={dist.master_port}",
            f"--node_rank={dist.node_rank}",
            f"--log_dir={log_dir}",
            "--join=True",
            script,
        ]  # msrun runs the `python` on PATH: this one, see launch()
        return [(argv, {NODE_RANK_ENV: str(dist.node_rank)})]
    if dist.launcher == "mpirun":
        argv = ["mpirun", "-n", str(dist.workers), "--oversubscribe", "--output-filename", str(log_dir)] + python
        return [(argv, {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})]
    table = str(Path(dist.rank_table).resolve())
    size = str(total_workers(dist))
    return [
        (python, {"RANK_TABLE_FILE": table, "RANK_SIZE": size, "RANK_ID": str(rank), "DEVICE_ID": str(device)})
        for rank, device in read_rank_table(dist.rank_table, dist.workers, dist.nodes, dist.node_rank)
    ]


def scheduler_host(dist):
    """Where the job's scheduler listens: ``distributed.master_addr`` under msrun (node 0's
    address), this machine's loopback under mpirun (one machine)."""
    return dist.master_addr if dist.launcher == "msrun" else SCHEDULER_HOST


def check_port_free(port, host=SCHEDULER_HOST):
    """Refuse a scheduler port something already listens on (the workers would retry for minutes).

    Raises:
        UserError: naming ``distributed.master_port`` and the port, or ``distributed.master_addr``
        when ``host`` is not an address of this machine.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
        try:
            probe.bind((host, port))
        except socket.gaierror as err:
            raise UserError(f"distributed.master_addr: cannot resolve {host} ({err.strerror})") from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise UserError(
                    f"distributed.master_addr: {host} is not an address of this machine, but the scheduler runs "
                    f"on node 0 (distributed.node_rank 0): run node 0 on the machine at {host}"
                ) from None
            raise UserError(
                f"distributed.master_port: {host}:{port} is already in use ({err.strerror}); "
                f"stop what listens there or choose a free port: -S distributed.master_port=<port>"
            ) from None


def launch(dist, script, log_dir, poll_s=1.0):
    """Start the workers of ``script`` with the configured launcher and wait for them.

    The scheduler port is checked first (msrun, mpirun; on node 0, which runs the scheduler).
    While the job runs, a worker that fails, or a scheduler that exits while workers wait for
    it, ends the job. However the job ends (success, failure, Ctrl-C, SIGTERM turned into
    ``KeyboardInterrupt`` by :func:`cli.main`), :func:`_shutdown` stops every process it
    started and their descendants.

    Args:
        dist: the ``distributed`` params group; script: the path of the Python script each
        worker runs; log_dir: the job's log folder, emptied first; poll_s: seconds between
        checks of the running job.

    Raises:
        UserError: the port is taken, the launcher program is not installed, the scheduler
        exited, or a worker failed. A failed worker is one line naming its rank, how it ended
        (exit code or signal) and its log, e.g. ``distributed training failed: rank 1 was killed
        by signal 9 (SIGKILL); log: models/train_logs/worker_1.log``; the last lines of that log
        are the error's ``details``. Under msrun the job ends as soon as msrun reports the dead
        worker, without waiting for msrun to wind down.
    """
    if dist.launcher in ("msrun", "mpirun") and dist.node_rank == 0:  # node 0 runs the scheduler
        check_port_free(dist.master_port, scheduler_host(dist))
    log_dir = Path(log_dir).resolve()
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    procs = []
    with _subreaper():
        try:
            for index, (argv, extra) in enumerate(worker_commands(dist, script, log_dir)):
                procs.append(_start(argv, extra, log_dir / f"launcher_{index}.log", dist.launcher))
            failure = _wait(procs, dist, log_dir, poll_s)
        finally:
            _shutdown(procs)
    if failure:
        raise failure


def _start(argv, extra, log_path, launcher):
    """Start one launcher process in its own session; returns ``(Popen, log file)``."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, **extra, **{WORKER_ENV: "1", "PATH": path})
    log = open(log_path, "w")
    try:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log
    except FileNotFoundError:
        log.close()
        raise UserError(
            f"distributed.launcher {launcher}: '{argv[0]}' not found on PATH (activate .venv; mpirun needs OpenMPI)"
        ) from None


def _wait(procs, dist, log_dir, poll_s):
    """Poll until every launcher process exits 0 (returns None) or the job fails (returns the UserError)."""
    follow = worker_logs.Follower(worker_logs.rank_log(dist, log_dir, 0))
    msrun_log = worker_logs.Follower(log_dir / "launcher_0.log")  # where msrun reports a dead worker
    scheduler, ranks = _SchedulerWatch(), {}
    while True:
        follow.echo()
        family = _family()
        ranks.update(_worker_ranks(family))
        dead = worker_logs.msrun_dead_worker(msrun_log.new_lines()) if dist.launcher == "msrun" else None
        if dead:
            pid, code = dead
            return worker_logs.worker_failure(dist, log_dir, ranks.get(pid), code, f"a worker (pid {pid})")
        codes = [proc.poll() for proc, _ in procs]
        failed = [k for k, code in enumerate(codes) if code not in (None, 0)]
        if failed and dist.launcher == "rank_table":  # one process per rank, started by us
            return worker_logs.worker_failure(dist, log_dir, failed[0], codes[failed[0]])
        if failed:
            how = worker_logs.exit_text(codes[failed[0]])
            return worker_logs.failure(
                f"distributed training failed: {dist.launcher} {how}", worker_logs.failed_log(log_dir, failed[0])
            )
        if all(code == 0 for code in codes):
            follow.echo()
            return None
        # only node 0's scheduler is the job's: one on another node (sharing its machine) ends at once
        if dist.node_rank == 0 and scheduler.left_workers_waiting(family):
            log = (
                log_dir / "scheduler.log"
                if (log_dir / "scheduler.log").is_file()
                else worker_logs.failed_log(log_dir, 0)
            )
            where = f"{scheduler_host(dist)}:{dist.master_port} (distributed.master_port)"
            return worker_logs.failure(
                f"distributed: the scheduler on {where} exited while the workers waited for it", log
            )
        time.sleep(poll_s)


def _worker_ranks(family):
    """``{pid: rank}`` of the live MindSpore workers (``MS_ROLE=MS_WORKER``, rank in ``MS_NODE_ID``)."""
    ranks = {}
    for proc in family:
        env = _environ(proc)
        if env.get("MS_ROLE") == "MS_WORKER" and env.get("MS_NODE_ID", "").isdigit():
            ranks[proc.pid] = int(env["MS_NODE_ID"])
    return ranks


class _SchedulerWatch:
    """Notices MindSpore's scheduler process (``MS_ROLE=MS_SCHED``) exiting before its workers."""

    def __init__(self):
        self.seen, self.gone_since = False, None

    def left_workers_waiting(self, family):
        """True once the scheduler has been gone for SCHEDULER_GRACE_S while workers still run."""
        roles = {_role(proc) for proc in family}
        if "MS_SCHED" in roles:
            self.seen, self.gone_since = True, None
        elif self.seen and "MS_WORKER" in roles:
            self.gone_since = self.gone_since or time.monotonic()
            return time.monotonic() - self.gone_since > SCHEDULER_GRACE_S
        return False


def _role(proc):
    """MS_ROLE of a live process, or None (also for zombies and processes gone meanwhile)."""
    return _environ(proc).get("MS_ROLE")


def _environ(proc):
    """The environment a live process started with; {} for zombies and processes gone meanwhile."""
    try:
        return {} if proc.status() == psutil.STATUS_ZOMBIE else proc.environ()
    except psutil.Error:
        return {}


@contextlib.contextmanager
def _subreaper():
    """Make this process the subreaper of its descendants (Linux) while the job runs.

    Workers whose launcher exits (or that ``setsid`` away from it) are then re-parented to this
    process instead of PID 1, so :func:`_family` still finds them.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _family():
    """Every live descendant of this process started by :func:`launch` (marked by WORKER_ENV)."""
    family = []
    for proc in psutil.Process().children(recursive=True):
        try:
            marked = proc.status() == psutil.STATUS_ZOMBIE or proc.environ().get(WORKER_ENV) == "1"
        except psutil.Error:
            marked = False
        if marked:
            family.append(proc)
    return family


def _shutdown(procs):
    """The one way a job ends: stop and reap every launched process and descendant, close the logs.

    SIGTERM first; whatever still runs after :data:`STOP_GRACE_S` gets SIGKILL.
    """
    family = _family()
    for proc in family:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    for proc, log in procs:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc.wait(timeout=0)  # collect the exit status if psutil has not
        log.close()
