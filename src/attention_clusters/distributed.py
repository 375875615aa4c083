"""Data-parallel training: the ``distributed`` settings and what each worker does at its start.

The train stage is one command for the user. With ``distributed.launcher`` other than ``none``
the stage process becomes a *launcher* (:mod:`.launcher`): it starts ``distributed.workers``
copies of itself through msrun, mpirun or an HCCL rank table (:mod:`.rank_table`), each marked
with :data:`WORKER_ENV`, and supervises them. This module is what the stage itself calls:
:func:`check_settings` before anything starts, :func:`is_worker` to tell a worker from the
launcher, and :func:`init_worker`, with which each worker initialises MindSpore's collective
communication and then trains on its shard of every epoch's shuffle with gradients averaged over
workers (effective batch = batch_size x workers); rank 0 alone writes checkpoints and metrics.

Several nodes may share one machine. msrun starts a scheduler on every node whose machine has
the address ``master_addr``, so each node on node 0's machine gets one; all but node 0's end at
once (:func:`init_worker`), leaving node 0's as the job's only scheduler.
"""

import os
import socket
import subprocess
import sys
import time

from .errors import UserError
from .rank_table import read_rank_table

WORKER_ENV = "ATTENTION_CLUSTERS_WORKER"  # set in every worker's environment by the launcher
NODE_RANK_ENV = "ATTENTION_CLUSTERS_NODE_RANK"  # distributed.node_rank, for msrun's processes


def is_worker():
    """True inside a worker process started by :func:`.launcher.launch`."""
    return os.environ.get(WORKER_ENV) == "1"


def check_settings(dist, device_target):
    """Cross-key checks of the ``distributed`` params group.

    Raises:
        UserError: workers > 1 without a launcher, rank_table on a device other than Ascend,
        node keys that do not fit (:func:`check_nodes`), or a rank table that does not fit
        (:func:`.rank_table.read_rank_table`).
    """
    if dist.launcher == "none" and dist.workers != 1:
        raise UserError(
            f"params.yaml: distributed.workers is {dist.workers} but "
            "distributed.launcher is none; choose msrun, mpirun or rank_table"
        )
    check_nodes(dist)
    if dist.launcher == "rank_table":
        if device_target != "Ascend":
            raise UserError(
                "params.yaml: distributed.launcher rank_table is for Ascend "
                f"(HCCL), but device_target is {device_target}; use msrun"
            )
        read_rank_table(dist.rank_table, dist.workers, dist.nodes, dist.node_rank)


def check_nodes(dist):
    """Checks of the multi-machine keys: ``nodes`` machines, this one ``node_rank``, the
    scheduler at ``master_addr`` (node 0).

    Raises:
        UserError: node_rank not below nodes; several nodes without msrun or rank_table (mpirun
        takes its hosts from its own hostfile), or with a loopback master_addr under msrun.
    """
    if dist.node_rank >= dist.nodes:
        raise UserError(
            f"params.yaml: distributed.node_rank is {dist.node_rank} but distributed.nodes is "
            f"{dist.nodes}; node ranks are 0..{dist.nodes - 1}"
        )
    if dist.nodes == 1:
        return
    if dist.launcher not in ("msrun", "rank_table"):
        raise UserError(
            f"params.yaml: distributed.nodes is {dist.nodes} but distributed.launcher is {dist.launcher}; "
            "several machines need msrun (or rank_table on Ascend)"
        )
    if dist.launcher == "msrun" and _is_loopback(dist.master_addr):
        raise UserError(
            f"params.yaml: distributed.master_addr is {dist.master_addr}, which the other {dist.nodes - 1} "
            "machine(s) cannot reach; give node 0's address on their network"
        )


def _is_loopback(host):
    return host == "localhost" or host.startswith("127.") or host == "::1"


def total_workers(dist):
    """Workers of the whole job: ``workers`` on each of the ``nodes`` machines."""
    return dist.workers * dist.nodes


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
                raise UserError(
                    f"distributed: no scheduler listening on 127.0.0.1:{port} after {timeout_s} s"
                ) from None
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
