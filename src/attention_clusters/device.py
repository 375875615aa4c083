"""MindSpore start-up shared by every stage that runs a network."""

import os

import mindspore as ms


def init(device_target="CPU", seed=None):
    """Graph mode on ``device_target`` ("CPU", "GPU", "Ascend"); optionally seed everything.

    On CPU the operator thread pool is set to the number of cores this process may use: the
    framework default (25 threads) oversubscribes small machines.
    """
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(device_target)
    if device_target == "CPU":
        ms.device_context.cpu.op_tuning.threads_num(max(1, len(os.sched_getaffinity(0))))
    if seed is not None:
        ms.set_seed(seed)
