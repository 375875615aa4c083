"""Data-parallel training through MindSpore's own launchers (msrun, mpirun, HCCL rank table).

The train stage is one command for the user. With ``distributed.launcher`` other than ``none``
the stage process becomes a *launcher*: it starts ``distributed.workers`` copies of itself
through the chosen launcher, each marked with :data:`WORKER_ENV`, waits for them, and exits
non-zero with the failed rank's log when any worker dies. Each worker initialises MindSpore's
collective communication, trains on its shard of every epoch's shuffle with gradients averaged
over workers (effective batch = batch_size x workers), and rank 0 alone writes checkpoints and
metrics.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import UserError

WORKER_ENV = "ATTENTION_CLUSTERS_WORKER"  # set in every worker's environment by the launcher
LAUNCHERS = ("none", "msrun", "mpirun", "rank_table")


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
    if dist.launcher == "rank_table":
        if device_target != "Ascend":
            raise UserError(f"params.yaml: distributed.launcher rank_table is for Ascend (HCCL), but device_target is {device_target}; use msrun")
        read_rank_table(dist.rank_table, dist.workers)


def read_rank_table(path, workers):
    """Validate an HCCL rank-table JSON (version 1.0 layout) for one server.

    Expected: ``{"server_count": "1", "server_list": [{"server_id": ..., "device":
    [{"device_id": "0", "device_ip": ..., "rank_id": "0"}, ...]}], "status": "completed"}``.

    Returns:
        list of ``(rank_id, device_id)`` int pairs sorted by rank.

    Raises:
        UserError: naming the file, when it is missing, not JSON, not of that shape, its rank
        ids are not 0..n-1, or its device count differs from ``workers``.
    """
    where = f"distributed.rank_table '{path}'"
    if not path:
        raise UserError("params.yaml: distributed.rank_table must name an HCCL rank-table JSON when launcher is rank_table")
    try:
        table = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{where}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    servers = table.get("server_list") if isinstance(table, dict) else None
    if not isinstance(servers, list) or len(servers) != 1 or not isinstance(servers[0], dict):
        raise UserError(f"{where}: expected a server_list with exactly one server (run one launcher per server)")
    devices = servers[0].get("device")
    if not isinstance(devices, list) or not devices:
        raise UserError(f"{where}: server_list[0].device must be a non-empty list")
    pairs = []
    for k, dev in enumerate(devices):
        try:
            pairs.append((int(dev["rank_id"]), int(dev["device_id"])))
        except (TypeError, KeyError, ValueError):
            raise UserError(f"{where}: device[{k}] needs integer-valued 'rank_id' and 'device_id'") from None
    pairs.sort()
    if [rank for rank, _ in pairs] != list(range(len(pairs))):
        raise UserError(f"{where}: rank_id values must be 0..{len(pairs) - 1}, got {sorted(r for r, _ in pairs)}")
    if len({device for _, device in pairs}) != len(pairs):
        raise UserError(f"{where}: device_id values repeat")
    if len(pairs) != workers:
        raise UserError(f"{where}: lists {len(pairs)} devices but distributed.workers is {workers}")
    return pairs


def worker_commands(dist, script, log_dir):
    """The processes a launcher starts: list of ``(argv, extra_env)``.

    msrun and mpirun are one process each (they spawn the workers); rank_table is one process
    per device with RANK_TABLE_FILE, RANK_SIZE, RANK_ID and DEVICE_ID set, as the ModelZoo
    scripts do.
    """
    python = [sys.executable, script]
    if dist.launcher == "msrun":
        argv = ["msrun", f"--worker_num={dist.workers}", f"--local_worker_num={dist.workers}",
                "--master_addr=127.0.0.1", f"--master_port={dist.master_port}", f"--log_dir={log_dir}",
                "--join=True", script]  # msrun runs the `python` on PATH: this one, see launch()
        return [(argv, {})]
    if dist.launcher == "mpirun":
        argv = ["mpirun", "-n", str(dist.workers), "--oversubscribe", "--output-filename", str(log_dir)] + python
        return [(argv, {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})]
    table = str(Path(dist.rank_table).resolve())
    return [
        (python, {"RANK_TABLE_FILE": table, "RANK_SIZE": str(dist.workers), "RANK_ID": str(rank), "DEVICE_ID": str(device)})
        for rank, device in read_rank_table(dist.rank_table, dist.workers)
    ]


def launch(dist, script, log_dir, poll_s=1.0):
    """Start the workers of ``script`` with the configured launcher and wait for them.

    Every started process runs in its own process group; when one exits non-zero the others are
    killed, so a dead worker never leaves the rest waiting in a collective.

    Raises:
        UserError: the launcher program is not installed, or a worker failed (the message
        names the log to read; the tail of the failed rank's log is printed to stderr).
    """
    log_dir = Path(log_dir).resolve()
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    procs = []
    for index, (argv, extra) in enumerate(worker_commands(dist, script, log_dir)):
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = dict(os.environ, **extra, **{WORKER_ENV: "1", "PATH": path})
        log = open(log_dir / f"launcher_{index}.log", "w")
        try:
            procs.append((subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
        except FileNotFoundError:
            _stop(procs)
            raise UserError(f"distributed.launcher {dist.launcher}: '{argv[0]}' not found on PATH (activate .venv; mpirun needs OpenMPI)") from None
    follow = _Follower(_rank0_log(dist, log_dir))
    try:
        while True:
            follow.echo()
            codes = [proc.poll() for proc, _ in procs]
            failed = [k for k, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                _stop(procs)
                log = _failed_log(log_dir, failed[0])
                print(f"--- tail of {log} ---\n{_tail(log)}", file=sys.stderr)
                raise UserError(f"distributed training failed (launcher exit {codes[failed[0]]}); see {log}")
            if all(code == 0 for code in codes):
                follow.echo()
                for _, log in procs:
                    log.close()
                return
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop(procs)
        raise


def _rank0_log(dist, log_dir):
    """Where rank 0's console output goes under each launcher."""
    if dist.launcher == "msrun":
        return log_dir / "worker_0.log"
    if dist.launcher == "mpirun":
        return log_dir / "1" / "rank.0" / "stdout"
    return log_dir / "launcher_0.log"


class _Follower:
    """Echoes rank 0's per-epoch lines to the launcher's console while the workers run."""

    PREFIXES = ("epoch ", "resuming ")

    def __init__(self, path):
        self.path, self.offset = path, 0

    def echo(self):
        if not self.path.is_file():
            return
        with open(self.path, errors="replace") as handle:
            handle.seek(self.offset)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        for line in complete.splitlines():
            if line.startswith(self.PREFIXES):
                print(line, flush=True)


def _stop(procs):
    for proc, _ in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc, log in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _failed_log(log_dir, index):
    """The most telling log: a worker's log with a Python traceback, else the launcher's own."""
    for path in sorted(log_dir.rglob("*")):
        if path.is_file() and not path.name.startswith(("launcher_", "scheduler")):
            if "Traceback" in path.read_text(errors="replace"):
                return path
    return log_dir / f"launcher_{index}.log"


def _tail(path, lines=30):
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(line for line in text[-lines:])


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
    """
    if not is_worker():
        return 0, 1
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    if device_target == "CPU" and "OMPI_COMM_WORLD_RANK" in os.environ and "MS_ROLE" not in os.environ:
        _mpi_to_dynamic_cluster(master_port)
    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()
