"""Data-parallel training through MindSpore's own launchers (msrun, mpirun, HCCL rank table).

The train stage is one command for the user. With ``distributed.launcher`` other than ``none``
the stage process becomes a *launcher*: it starts ``distributed.workers`` copies of itself
through the chosen launcher, each marked with :data:`WORKER_ENV`, waits for them, and exits
non-zero when any worker dies, in one line naming its rank, its exit code or signal and its
log (msrun's report of the dead worker's pid is matched with the ranks seen running). Each
worker initialises MindSpore's collective communication, trains on its shard of every epoch's
shuffle with gradients averaged over workers (effective batch = batch_size x workers), and
rank 0 alone writes checkpoints and metrics.

The launcher owns every process it starts, including workers that leave its session (msrun
starts each worker with ``setsid``): it becomes their subreaper, and one shutdown path
(:func:`_shutdown`) stops them all when the job ends, fails or is interrupted (Ctrl-C or
SIGTERM), so no worker outlives the stage.

Several nodes may share one machine. msrun starts a scheduler on every node whose machine has
the address ``master_addr``, so each node on node 0's machine gets one; all but node 0's end at
once (:func:`init_worker`), leaving node 0's as the job's only scheduler.
"""

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .errors import UserError

WORKER_ENV = "ATTENTION_CLUSTERS_WORKER"  # set in every worker's environment by the launcher
NODE_RANK_ENV = "ATTENTION_CLUSTERS_NODE_RANK"  # distributed.node_rank, for msrun's processes
LAUNCHERS = ("none", "msrun", "mpirun", "rank_table")
SCHEDULER_HOST = "127.0.0.1"
STOP_GRACE_S = 20  # seconds a stopped process gets to exit before SIGKILL
SCHEDULER_GRACE_S = 10  # seconds workers may outlive their scheduler before the job is failed
_PR_SET_CHILD_SUBREAPER = 36
TAIL_LINES = 5  # lines of a failed worker's log shown under the error line
MSRUN_WORKER_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)\.")


def is_worker():
    """True inside a process started by :func:`launch`."""
    return os.environ.get(WORKER_ENV) == "1"


def check_settings(dist, device_target):
    """Cross-key checks of the ``distributed`` params group.

    Raises:
        UserError: workers > 1 without a launcher, or a rank table that does not fit.
    """
    if dist.launcher == "none" and dist.workers != 1:
        raise UserError(f"params.yaml: distributed.workers is {dist.workers} but distributed.launcher is none; choose msrun, mpirun or rank_table")
    check_nodes(dist)
    if dist.launcher == "rank_table":
        if device_target != "Ascend":
            raise UserError(f"params.yaml: distributed.launcher rank_table is for Ascend (HCCL), but device_target is {device_target}; use msrun")
        read_rank_table(dist.rank_table, dist.workers, dist.nodes, dist.node_rank)


def check_nodes(dist):
    """Checks of the multi-machine keys: ``nodes`` machines, this one ``node_rank``, the
    scheduler at ``master_addr`` (node 0).

    Raises:
        UserError: node_rank not below nodes; several nodes without msrun or rank_table (mpirun
        takes its hosts from its own hostfile), or with a loopback master_addr under msrun.
    """
    if dist.node_rank >= dist.nodes:
        raise UserError(f"params.yaml: distributed.node_rank is {dist.node_rank} but distributed.nodes is "
                        f"{dist.nodes}; node ranks are 0..{dist.nodes - 1}")
    if dist.nodes == 1:
        return
    if dist.launcher not in ("msrun", "rank_table"):
        raise UserError(f"params.yaml: distributed.nodes is {dist.nodes} but distributed.launcher is {dist.launcher}; "
                        "several machines need msrun (or rank_table on Ascend)")
    if dist.launcher == "msrun" and _is_loopback(dist.master_addr):
        raise UserError(f"params.yaml: distributed.master_addr is {dist.master_addr}, which the other {dist.nodes - 1} "
                        "machine(s) cannot reach; give node 0's address on their network")


def _is_loopback(host):
    return host == "localhost" or host.startswith("127.") or host == "::1"


def total_workers(dist):
    """Workers of the whole job: ``workers`` on each of the ``nodes`` machines."""
    return dist.workers * dist.nodes


def read_rank_table(path, workers, nodes=1, node_rank=0):
    """Validate an HCCL rank-table JSON (version 1.0 layout) and return this server's devices.

    Expected: ``{"server_count": "2", "server_list": [{"server_id": ..., "device":
    [{"device_id": "0", "device_ip": ..., "rank_id": "0"}, ...]}, ...], "status": "completed"}``
    with one server per machine (``nodes``), in node order, each listing ``workers`` devices;
    the rank ids of all servers are 0..n-1.

    Returns:
        list of ``(rank_id, device_id)`` int pairs of server ``node_rank``, sorted by rank.

    Raises:
        UserError: naming the file, when it is missing, not JSON, not of that shape, its rank
        ids are not 0..n-1, a server repeats a device id, or its server or device counts differ
        from ``nodes`` or ``workers``.
    """
    where = f"distributed.rank_table '{path}'"
    servers = _rank_table_servers(_read_table(path, where), where, nodes)
    ranks = sorted(rank for pairs in servers for rank, _ in pairs)
    if ranks != list(range(len(ranks))):
        raise UserError(f"{where}: rank_id values must be 0..{len(ranks) - 1}, got {ranks}")
    for index, pairs in enumerate(servers):
        if len({device for _, device in pairs}) != len(pairs):
            raise UserError(f"{where}: device_id values repeat in server_list[{index}]")
        if len(pairs) != workers:
            raise UserError(f"{where}: server_list[{index}] lists {len(pairs)} devices "
                            f"but distributed.workers is {workers}")
    return servers[node_rank]


def _read_table(path, where):
    """The parsed JSON of a rank table."""
    if not path:
        raise UserError("params.yaml: distributed.rank_table must name an HCCL rank-table JSON when launcher is rank_table")
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{where}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: cannot read ({getattr(err, 'strerror', None) or err})") from None


def _rank_table_servers(table, where, nodes):
    """Per server of the table, its ``(rank_id, device_id)`` pairs sorted by rank."""
    servers = table.get("server_list") if isinstance(table, dict) else None
    if not isinstance(servers, list) or not servers or not all(isinstance(server, dict) for server in servers):
        raise UserError(f"{where}: expected a non-empty server_list of servers")
    if len(servers) != nodes:
        raise UserError(f"{where}: lists {len(servers)} servers but distributed.nodes is {nodes} "
                        "(one server per machine)")
    count = table.get("server_count", str(len(servers)))
    if str(count) != str(len(servers)):
        raise UserError(f"{where}: server_count is {count} but server_list has {len(servers)} servers")
    result = []
    for index, server in enumerate(servers):
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            raise UserError(f"{where}: server_list[{index}].device must be a non-empty list")
        pairs = []
        for k, dev in enumerate(devices):
            try:
                pairs.append((int(dev["rank_id"]), int(dev["device_id"])))
            except (TypeError, KeyError, ValueError):
                raise UserError(f"{where}: server_list[{index}].device[{k}] needs integer-valued "
                                "'rank_id' and 'device_id'") from None
        result.append(sorted(pairs))
    return result


def worker_commands(dist, script, log_dir):
    """The processes a launcher starts: list of ``(argv, extra_env)``.

    msrun and mpirun are one process each (they spawn the workers); msrun's gets this node's
    rank in :data:`NODE_RANK_ENV`. rank_table is one process per device with RANK_TABLE_FILE,
    RANK_SIZE, RANK_ID and DEVICE_ID set, as the ModelZoo scripts do.
    """
    python = [sys.executable, script]
    if dist.launcher == "msrun":
        argv = ["msrun", f"--worker_num={total_workers(dist)}", f"--local_worker_num={dist.workers}",
                f"--master_addr={dist.master_addr}", f"--master_port={dist.master_port}",
                f"--node_rank={dist.node_rank}", f"--log_dir={log_dir}",
                "--join=True", script]  # msrun runs the `python` on PATH: this one, see launch()
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
    it, ends the job. However the
    job ends (success, failure, Ctrl-C, SIGTERM turned into ``KeyboardInterrupt`` by
    :func:`cli.main`), :func:`_shutdown` stops every process it started and their descendants.

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
        raise UserError(f"distributed.launcher {launcher}: '{argv[0]}' not found on PATH (activate .venv; mpirun needs OpenMPI)") from None


def _wait(procs, dist, log_dir, poll_s):
    """Poll until every launcher process exits 0 (returns None) or the job fails (returns the UserError)."""
    follow = _Follower(_rank_log(dist, log_dir, 0))
    msrun_log = _Follower(log_dir / "launcher_0.log")  # where msrun reports a dead worker
    scheduler, ranks = _SchedulerWatch(), {}
    while True:
        follow.echo()
        family = _family()
        ranks.update(_worker_ranks(family))
        dead = _msrun_dead_worker(msrun_log.new_lines()) if dist.launcher == "msrun" else None
        if dead:
            pid, code = dead
            return _worker_failure(dist, log_dir, ranks.get(pid), code, f"a worker (pid {pid})")
        codes = [proc.poll() for proc, _ in procs]
        failed = [k for k, code in enumerate(codes) if code not in (None, 0)]
        if failed and dist.launcher == "rank_table":  # one process per rank, started by us
            return _worker_failure(dist, log_dir, failed[0], codes[failed[0]])
        if failed:
            log = _failed_log(log_dir, failed[0])
            return _failure(f"distributed training failed: {dist.launcher} {_exit_text(codes[failed[0]])}", log)
        if all(code == 0 for code in codes):
            follow.echo()
            return None
        # only node 0's scheduler is the job's: one on another node (sharing its machine) ends at once
        if dist.node_rank == 0 and scheduler.left_workers_waiting(family):
            log = log_dir / "scheduler.log" if (log_dir / "scheduler.log").is_file() else _failed_log(log_dir, 0)
            where = f"{scheduler_host(dist)}:{dist.master_port} (distributed.master_port)"
            return _failure(f"distributed: the scheduler on {where} exited while the workers waited for it", log)
        time.sleep(poll_s)


def _msrun_dead_worker(lines):
    """``(pid, exit code)`` of the first worker msrun reports dead in ``lines`` of its log, or None.

    msrun logs ``Worker process <pid> exit with exception. Error code: <code>.``, the code being
    ``Popen.returncode`` (negative: killed by that signal).
    """
    for line in lines:
        match = MSRUN_WORKER_EXIT.search(line)
        if match:
            return int(match[1]), int(match[2])
    return None


def _worker_ranks(family):
    """``{pid: rank}`` of the live MindSpore workers (``MS_ROLE=MS_WORKER``, rank in ``MS_NODE_ID``)."""
    ranks = {}
    for proc in family:
        env = _environ(proc)
        if env.get("MS_ROLE") == "MS_WORKER" and env.get("MS_NODE_ID", "").isdigit():
            ranks[proc.pid] = int(env["MS_NODE_ID"])
    return ranks


def _worker_failure(dist, log_dir, rank, code, unknown="a worker"):
    """The UserError for worker ``rank`` (None: not known, named ``unknown``) that ended with ``code``."""
    if rank is None:
        return _failure(f"distributed training failed: {unknown} {_exit_text(code)}", _failed_log(log_dir, 0))
    return _failure(f"distributed training failed: rank {rank} {_exit_text(code)}", _rank_log(dist, log_dir, rank))


def _failure(message, log):
    """``UserError(message; log: <log>)``; its details: ``last lines of <log name>:`` and the log's short tail."""
    tail = _short_tail(log)
    details = [f"last lines of {Path(log).name}:"] + [f"  {line}" for line in tail] if tail else []
    return UserError(f"{message}; log: {log}", details=details)


def _exit_text(code):
    """How a process ended, from a ``Popen.returncode``: 'exited with code 1', 'was killed by signal 9 (SIGKILL)'."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = f" ({signal.Signals(-code).name})"
    except ValueError:  # a real-time signal has no name
        name = ""
    return f"was killed by signal {-code}{name}"


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


def _rank_log(dist, log_dir, rank):
    """Where a rank's console output goes under each launcher."""
    if dist.launcher == "msrun":
        return log_dir / f"worker_{rank}.log"
    if dist.launcher == "mpirun":
        return log_dir / "1" / f"rank.{rank}" / "stdout"
    return log_dir / f"launcher_{rank}.log"


class _Follower:
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


def _failed_log(log_dir, index):
    """The most telling log: a worker's log with a Python traceback, else the launcher's own."""
    for path in sorted(log_dir.rglob("*")):
        if path.is_file() and not path.name.startswith(("launcher_", "scheduler")):
            if "Traceback" in path.read_text(errors="replace"):
                return path
    return log_dir / f"launcher_{index}.log"


def _short_tail(path, lines=TAIL_LINES):
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


def _mpi_to_dynamic_cluster(master_port):
    """Under mpirun on CPU: join MindSpore's dynamic cluster using the MPI rank and size.

    MindSpore reads the MPI environment itself on GPU and Ascend; on CPU its collectives need
    the dynamic-cluster variables (MS_ROLE, MS_SCHED_HOST/PORT, MS_WORKER_NUM, MS_NODE_ID) and a
    scheduler process, which rank 0 starts here. The scheduler exits with the cluster.
    """
    rank, size = os.environ["OMPI_COMM_WORLD_RANK"], os.environ["OMPI_COMM_WORLD_SIZE"]
    common = {"MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": str(master_port), "MS_WORKER_NUM": size}
    if rank == "0":
        code = "import mindspore as ms; ms.set_device('CPU'); from mindspore.communication import init; init()"
        subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, MS_ROLE="MS_SCHED", **common))
    _wait_for_port(master_port)  # registering before the scheduler listens backs off for a minute
    os.environ.update(common, MS_ROLE="MS_WORKER", MS_NODE_ID=rank)


def _wait_for_port(port, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise UserError(f"distributed: no scheduler listening on 127.0.0.1:{port} after {timeout_s} s") from None
            time.sleep(0.2)


def init_worker(device_target="CPU", master_port=8118):
    """In a worker: initialise collective communication and data-parallel gradient averaging.

    Call after :func:`device.init`. Returns ``(rank, world_size)``; ``(0, 1)`` outside a
    launched worker.

    msrun also runs the script as the scheduler (``MS_ROLE=MS_SCHED``), where this call serves
    the cluster until the job ends. msrun starts a scheduler wherever ``master_addr`` is an
    address of the machine, so a node other than 0 on node 0's machine gets one too; that one
    exits here with status 0 (raises ``SystemExit(0)``). Otherwise two schedulers would race
    for the port and msrun would fail the node whose scheduler lost.
    """
    if not is_worker():
        return 0, 1
    if os.environ.get("MS_ROLE") == "MS_SCHED" and os.environ.get(NODE_RANK_ENV, "0") != "0":
        raise SystemExit(0)
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    if device_target == "CPU" and "OMPI_COMM_WORLD_RANK" in os.environ and "MS_ROLE" not in os.environ:
        _mpi_to_dynamic_cluster(master_port)
    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()
