"""Timing shared by bench/speed.py and bench/torch_models.py."""

import time

import numpy as np


def median_rate(work, items, seconds, blocks=3):
    """Items/s of ``work()`` (each call handles ``items`` items): the median over ``blocks``
    blocks, each repeating ``work`` until at least ``seconds`` have passed. Call ``work`` once
    before, to compile and warm up; a block runs it at least once however slow."""
    rates = []
    for _ in range(blocks):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < seconds:
            work()
            calls += 1
        rates.append(calls * items / (time.perf_counter() - start))
    return float(np.median(rates))
