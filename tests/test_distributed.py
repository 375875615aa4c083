import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
from conftest import ROOT

import attention_clusters
from attention_clusters import distributed, launcher, rank_table, worker_logs
from attention_clusters.errors import UserError

WORKER = str(ROOT / "tests" / "dist_worker.py")


def settings(**kw):
    base = {
        "launcher": "msrun",
        "workers": 2,
        "rank_table": "",
        "master_port": 8119,
        "nodes": 1,
        "node_rank": 0,
        "master_addr": "127.0.0.1",
    }
    return SimpleNamespace(**{**base, **kw})


def write_rank_table(tmp_path, devices, servers=1):
    """An HCCL rank table of ``servers`` servers, each with ``devices`` (rank, device) pairs;
    server s adds s * len(devices) to the ranks."""
    table = {
        "version": "1.0",
        "server_count": str(servers),
        "server_list": [
            {
                "server_id": f"10.0.0.{s + 1}",
                "device": [
                    {"device_id": str(d), "device_ip": f"192.168.{d}.{s + 2}", "rank_id": str(r + s * len(devices))}
                    for r, d in devices
                ],
            }
            for s in range(servers)
        ],
        "status": "completed",
    }
    path = tmp_path / "rank_table.json"
    path.write_text(json.dumps(table))
    return path


def test_rank_table_commands_set_the_hccl_environment(tmp_path):
    path = write_rank_table(tmp_path, [(1, 5), (0, 4)])
    commands = launcher.worker_commands(
        settings(launcher="rank_table", rank_table=str(path)), "stages/train.py", tmp_path
    )
    assert [env for _, env in commands] == [
        {"RANK_TABLE_FILE": str(path.resolve()), "RANK_SIZE": "2", "RANK_ID": "0", "DEVICE_ID": "4"},
        {"RANK_TABLE_FILE": str(path.resolve()), "RANK_SIZE": "2", "RANK_ID": "1", "DEVICE_ID": "5"},
    ]
    assert all(argv[-1] == "stages/train.py" for argv, _ in commands)


@pytest.mark.parametrize(
    "devices, servers, workers, message",
    [
        ([(0, 0), (1, 1)], 1, 4, "lists 2 devices but distributed.workers is 4"),
        ([(0, 0), (2, 1)], 1, 2, "rank_id values must be 0..1"),
        ([(0, 0), (1, 0)], 1, 2, "device_id values repeat"),
        ([(0, 0)], 2, 1, "lists 2 servers but distributed.nodes is 1"),
    ],
)
def test_rank_table_validation(tmp_path, devices, servers, workers, message):
    path = write_rank_table(tmp_path, devices, servers)
    with pytest.raises(UserError, match=message):
        rank_table.read_rank_table(str(path), workers)


def test_rank_table_file_errors(tmp_path):
    with pytest.raises(UserError, match="must name an HCCL rank-table"):
        distributed.check_settings(settings(launcher="rank_table", rank_table=""), "Ascend")
    with pytest.raises(UserError, match="rank_table is for Ascend"):
        distributed.check_settings(settings(launcher="rank_table", rank_table="t.json"), "CPU")
    with pytest.raises(UserError, match="file not found"):
        rank_table.read_rank_table(str(tmp_path / "none.json"), 2)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        rank_table.read_rank_table(str(tmp_path / "bad.json"), 2)
    with pytest.raises(UserError, match="cannot read"):
        rank_table.read_rank_table(str(tmp_path), 2)
    (tmp_path / "shape.json").write_text('{"server_list": [{"device": [{"device_id": "x", "rank_id": "0"}]}]}')
    with pytest.raises(UserError, match="integer-valued"):
        rank_table.read_rank_table(str(tmp_path / "shape.json"), 1)


def test_multi_server_rank_table_starts_this_servers_devices(tmp_path):
    path = write_rank_table(tmp_path, [(0, 6), (1, 7)], servers=3)
    dist = settings(launcher="rank_table", rank_table=str(path), nodes=3, node_rank=1)
    distributed.check_settings(dist, "Ascend")
    commands = launcher.worker_commands(dist, "stages/train.py", tmp_path)
    assert [env for _, env in commands] == [
        {"RANK_TABLE_FILE": str(path.resolve()), "RANK_SIZE": "6", "RANK_ID": "2", "DEVICE_ID": "6"},
        {"RANK_TABLE_FILE": str(path.resolve()), "RANK_SIZE": "6", "RANK_ID": "3", "DEVICE_ID": "7"},
    ]
    assert rank_table.read_rank_table(str(path), 2, 3, 2) == [(4, 6), (5, 7)]


def test_multi_server_rank_table_validation(tmp_path):
    path = write_rank_table(tmp_path, [(0, 0), (1, 1)], servers=2)
    table = json.loads(path.read_text())
    table["server_list"][1]["device"].append({"device_id": "2", "device_ip": "192.168.2.3", "rank_id": "4"})
    path.write_text(json.dumps(table))
    with pytest.raises(UserError, match="server_list\\[1\\] lists 3 devices but distributed.workers is 2"):
        rank_table.read_rank_table(str(path), 2, 2)
    del table["server_list"][1]["device"][2]
    table["server_count"] = "3"
    path.write_text(json.dumps(table))
    with pytest.raises(UserError, match="server_count is 3 but server_list has 2 servers"):
        rank_table.read_rank_table(str(path), 2, 2)
    table["server_count"] = "2"
    table["server_list"][1]["device"][0]["rank_id"] = "1"  # rank 1 on both servers, no rank 2
    path.write_text(json.dumps(table))
    with pytest.raises(UserError, match=r"rank_id values must be 0..3, got \[0, 1, 1, 3\]"):
        rank_table.read_rank_table(str(path), 2, 2)


def test_msrun_across_machines(tmp_path):
    ((argv, _),) = launcher.worker_commands(settings(), "stages/train.py", tmp_path)
    assert "--master_addr=127.0.0.1" in argv and "--node_rank=0" in argv  # one machine: the defaults
    dist = settings(workers=4, nodes=3, node_rank=2, master_addr="10.1.2.3")
    distributed.check_settings(dist, "CPU")
    ((argv, _),) = launcher.worker_commands(dist, "stages/train.py", tmp_path)
    assert argv[:6] == [
        "msrun",
        "--worker_num=12",
        "--local_worker_num=4",
        "--master_addr=10.1.2.3",
        "--master_port=8119",
        "--node_rank=2",
    ]
    assert distributed.total_workers(dist) == 12


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            {"nodes": 2, "node_rank": 2, "master_addr": "10.1.2.3"},
            "node_rank is 2 but distributed.nodes is 2; node ranks are 0..1",
        ),
        ({"nodes": 2, "launcher": "mpirun", "master_addr": "10.1.2.3"}, "several machines need msrun"),
        ({"nodes": 2}, "master_addr is 127.0.0.1, which the other 1 machine\\(s\\) cannot reach"),
        ({"nodes": 2, "master_addr": "localhost"}, "master_addr is localhost, which"),
    ],
)
def test_node_settings_are_checked(kw, message):
    with pytest.raises(UserError, match=message):
        distributed.check_settings(settings(**kw), "CPU")


def test_scheduler_address_must_be_this_machine_on_node_0():
    with pytest.raises(UserError, match="master_addr: 192.0.2.1 is not an address of this machine"):
        launcher.check_port_free(8135, "192.0.2.1")  # TEST-NET-1: never local


def test_other_nodes_do_not_check_the_scheduler_port(tmp_path, monkeypatch):
    fake_msrun(monkeypatch, tmp_path / "pids", 60, 0.5)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match="already in use"):  # node 0: the port is checked
            launcher.launch(settings(master_port=port), WORKER, tmp_path / "logs")
        dist = settings(master_port=port, nodes=2, node_rank=1, master_addr="192.0.2.1")
        launcher.launch(dist, WORKER, tmp_path / "logs")  # node 1: the scheduler is elsewhere
    assert len(started_pids(tmp_path / "pids")) == 2


def test_workers_need_a_launcher():
    with pytest.raises(UserError, match="distributed.workers is 2 but distributed.launcher is none"):
        distributed.check_settings(settings(launcher="none"), "CPU")
    distributed.check_settings(settings(launcher="none", workers=1), "CPU")


def test_msrun_and_mpirun_commands(tmp_path):
    ((argv, _),) = launcher.worker_commands(settings(), "stages/train.py", tmp_path)
    assert argv[:3] == ["msrun", "--worker_num=2", "--local_worker_num=2"] and argv[-1] == "stages/train.py"
    ((argv, env),) = launcher.worker_commands(settings(launcher="mpirun"), "stages/train.py", tmp_path)
    assert argv[:3] == ["mpirun", "-n", "2"] and env["OMPI_ALLOW_RUN_AS_ROOT"] == "1"


LAUNCHERS = ["msrun"] + (["mpirun"] if shutil.which("mpirun") else [])
NODE_DRIVER = str(ROOT / "tests" / "node_driver.py")  # one node of a multi-node job


@pytest.fixture(scope="module")
def one_node_job(tmp_path_factory):
    """``job(program)``: the TEST_OUT folder of dist_worker.py's job with two workers on one
    node under that launcher program, run on the first call of the module and reused after."""
    outs = {}

    def job(program):
        if program not in outs:
            out = tmp_path_factory.mktemp(f"one_node_{program}")
            with pytest.MonkeyPatch.context() as env:
                env.setenv("TEST_OUT", str(out))
                env.setenv("TEST_PORT", "8131")
                launcher.launch(settings(launcher=program, master_port=8131), WORKER, out / "logs")
            outs[program] = out
        return outs[program]

    return job


def last_checkpoint(out):
    """Path of the last checkpoint that rank 0 wrote into ``out``/state."""
    saved = json.loads((out / "state" / "state.json").read_text())
    return out / "state" / saved["last"]


@pytest.mark.parametrize("program", LAUNCHERS)
def test_two_workers_end_identical_and_learn(one_node_job, program):
    out = one_node_job(program)
    ranks = [np.load(out / f"rank{r}.npz") for r in (0, 1)]
    assert sorted(ranks[0].files) == sorted(ranks[1].files) and len(ranks[0].files) >= 6
    for name in ranks[0].files:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name])
    for r in (0, 1):
        info = json.loads((out / f"rank{r}.json").read_text())
        assert info["world_size"] == 2
        assert info["losses"][-1] < info["losses"][0] - 0.05
    assert last_checkpoint(out).is_file()  # rank 0 wrote the state


def test_two_nodes_on_one_machine_end_as_one_node_with_two_workers(tmp_path, one_node_job):
    # Two msrun launches started together, one worker each, as two machines would run them.
    # check_settings refuses a loopback master_addr for several nodes (another machine could not
    # reach it); launch() itself takes any address of node 0's machine, and loopback needs no network.
    env = dict(os.environ, PYTHONPATH=SRC, TEST_OUT=str(tmp_path), TEST_PORT="8136")
    nodes = []
    for node in (0, 1):
        dist = settings(workers=1, nodes=2, node_rank=node, master_port=8136)
        argv = [sys.executable, NODE_DRIVER, json.dumps(vars(dist)), WORKER, str(tmp_path / f"logs{node}")]
        nodes.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [proc.communicate(timeout=300)[0] for proc in nodes]
    finally:
        for proc in nodes:  # on a timeout: SIGTERM, which makes each driver stop its workers
            proc.terminate()
            proc.wait(timeout=60)
    assert [proc.returncode for proc in nodes] == [0, 0], outputs
    one_node = one_node_job("msrun")
    assert last_checkpoint(tmp_path).read_bytes() == last_checkpoint(one_node).read_bytes()
    reference = np.load(one_node / "rank0.npz")
    for r in (0, 1):  # rank r ran on node r
        assert json.loads((tmp_path / f"rank{r}.json").read_text())["world_size"] == 2
        weights = np.load(tmp_path / f"rank{r}.npz")
        assert sorted(weights.files) == sorted(reference.files)
        for name in reference.files:
            np.testing.assert_array_equal(weights[name], reference[name])


@pytest.mark.parametrize("program", LAUNCHERS)
def test_dead_worker_fails_the_job_with_its_log(tmp_path, monkeypatch, program):
    monkeypatch.setenv("TEST_OUT", str(tmp_path))
    monkeypatch.setenv("TEST_PORT", "8132")
    monkeypatch.setenv("TEST_DIE", "kill")
    logs = tmp_path / "logs"
    with pytest.raises(UserError) as err:
        launcher.launch(settings(launcher=program, master_port=8132), WORKER, logs)
    if program == "msrun":  # mpirun's own report of a dead rank is not parsed: its exit status is named
        how = "rank 1 was killed by signal 9 (SIGKILL)"
        assert str(err.value) == f"distributed training failed: {how}; log: {logs}/worker_1.log"
        assert err.value.details[0] == "last lines of worker_1.log:" and len(err.value.details) == 6
        assert err.value.details[-1] == "  rank 1 is killed on purpose"
    assert str(err.value).startswith("distributed training failed: ")
    assert not (tmp_path / "rank0.npz").exists()


FAKE_LAUNCHER = str(ROOT / "tests" / "fake_launcher.py")
DRIVER = str(ROOT / "tests" / "launch_driver.py")
SRC = str(Path(attention_clusters.__file__).parents[1])  # the package under test


def fake_msrun(monkeypatch, pidfile, scheduler_s, worker_s, death=None):
    argv = [sys.executable, FAKE_LAUNCHER, str(pidfile), str(scheduler_s), str(worker_s)]
    extra = lambda log_dir: [str(log_dir), death] if death else []  # noqa: E731
    monkeypatch.setattr(launcher, "worker_commands", lambda dist, script, log_dir: [(argv + extra(log_dir), {})])


def started_pids(pidfile, count=2, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [int(line) for line in pidfile.read_text().split()] if pidfile.exists() else []
        if len(pids) >= count:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"workers did not start within {timeout_s} s")


def running(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_busy_scheduler_port_is_one_line_within_seconds(tmp_path, monkeypatch):
    fake_msrun(monkeypatch, tmp_path / "pids", 1, 20)  # without the check: 20 s of waiting workers
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(UserError) as err:
            launcher.launch(settings(master_port=port), WORKER, tmp_path / "logs")
    assert time.monotonic() - start < 5 and not (tmp_path / "pids").exists()
    assert str(err.value) == (
        f"distributed.master_port: 127.0.0.1:{port} is already in use (Address already in use); "
        "stop what listens there or choose a free port: -S distributed.master_port=<port>"
    )


def test_scheduler_exit_ends_the_job_and_its_workers(tmp_path, monkeypatch):
    fake_msrun(monkeypatch, tmp_path / "pids", 1, 120)
    monkeypatch.setattr(launcher, "SCHEDULER_GRACE_S", 1)
    start = time.monotonic()
    with pytest.raises(
        UserError,
        match=(
            r"^distributed: the scheduler on 127.0.0.1:8133 "
            r"\(distributed.master_port\) exited while the workers waited"
        ),
    ):
        launcher.launch(settings(master_port=8133), WORKER, tmp_path / "logs")
    assert time.monotonic() - start < 30
    assert not any(running(pid) for pid in started_pids(tmp_path / "pids"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_launcher_stops_every_worker(tmp_path, signum):
    (tmp_path / "dvc.yaml").write_text("stages:\n  launch:\n    cmd: python launch_driver.py\n")
    pidfile = tmp_path / "pids"
    env = dict(os.environ, PYTHONPATH=SRC)
    driver = subprocess.Popen(
        [sys.executable, DRIVER, str(pidfile), "8134"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        pids = started_pids(pidfile)
        driver.send_signal(signum)
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 130 and err.strip().splitlines()[-1] == "launch: interrupted"
    assert not any(running(pid) for pid in pids), "workers outlived the stage"


@pytest.mark.parametrize("death, how", [("kill", "was killed by signal 9 (SIGKILL)"), ("3", "exited with code 3")])
def test_dead_worker_is_one_line_with_rank_exit_and_log(tmp_path, monkeypatch, death, how):
    fake_msrun(monkeypatch, tmp_path / "pids", 120, 60, death)  # the launcher itself would linger 60 s
    logs = tmp_path / "logs"
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        launcher.launch(settings(master_port=8135), WORKER, logs, poll_s=0.2)
    assert time.monotonic() - start < 30
    assert str(err.value) == f"distributed training failed: rank 1 {how}; log: {logs}/worker_1.log"
    assert err.value.details == ("last lines of worker_1.log:", "  rank 1 started")
    assert not any(running(pid) for pid in started_pids(tmp_path / "pids"))


def test_short_tail_ends_at_the_exception_line(tmp_path):
    log = tmp_path / "worker_1.log"
    lines = [
        "[WARNING] a",
        "Traceback (most recent call last):",
        '  File "w.py", line 3, in <module>',
        "    init()",
        "RuntimeError: rank 1 dies",
        "",
        "----",
        "- C++ Call Stack: (For framework developers)",
        "x.cc:12 F",
    ]
    log.write_text("\n".join(lines) + "\n")
    assert worker_logs.short_tail(log, 4) == lines[1:5]
    log.write_text("one\n\ntwo\n")
    assert worker_logs.short_tail(log) == ["one", "two"]
