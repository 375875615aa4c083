"""Worker for test_storage: writes into a small or read-only file system (a 1 MB tmpfs the test
mounts in its own mount namespace) and prints one JSON line per case: the error line, whether the
previous file is unchanged, and the files left in the folder.

Usage: python disk_worker.py FOLDER {prepare|full|read_only}
"""

import json
import sys
from pathlib import Path

import numpy as np

from attention_clusters import storage
from attention_clusters.errors import UserError

folder, mode = Path(sys.argv[1]), sys.argv[2]
BIG = (64, 25, 28, 28)  # 1.25 MB of uint8: more than the file system holds
OLD = np.arange(10, dtype=np.uint8)


def attempt(name, target, write):
    before = (folder / target).read_bytes()
    try:
        write(folder / target)
        outcome = "ok"
    except UserError as err:
        outcome = str(err)
    intact = (folder / target).read_bytes() == before
    print(
        json.dumps(
            {"case": name, "outcome": outcome, "intact": intact, "files": sorted(p.name for p in folder.iterdir())}
        ),
        flush=True,
    )


def memmap(path):
    with storage.npy_writer(path, BIG, np.uint8) as out:
        out[:] = 7


def checkpoint(path):
    from attention_clusters import checkpoints, trained_model

    checkpoints.save_checkpoint(trained_model.build_model(1, 64), path)  # 64 x 50 x 1024 float32: 13 MB


if mode == "prepare":
    for name in ("videos.npy", "frames.npy", "model.ckpt"):
        storage.save_npy(folder / name, OLD)
elif mode == "read_only":
    attempt("save_npy", "frames.npy", lambda path: storage.save_npy(path, np.zeros(10, np.uint16)))
    attempt("npy_writer", "videos.npy", memmap)
else:
    attempt("npy_writer", "videos.npy", memmap)
    attempt("save_npy", "frames.npy", lambda path: storage.save_npy(path, np.zeros(BIG, np.uint8)))
    attempt("checkpoint", "model.ckpt", checkpoint)
