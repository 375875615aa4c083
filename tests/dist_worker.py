"""Worker script for test_distributed: a few data-parallel epochs on tiny data.

Writes ``rank<r>.npz`` (final parameters) and ``rank<r>.json`` (per-epoch losses) into
``$TEST_OUT``. With ``TEST_DIE=1`` rank 1 raises instead, with ``TEST_DIE=kill`` it is killed by
SIGKILL (as by the kernel's OOM killer), to test that the job goes down and says how.
"""

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from attention_clusters import device, distributed, fused_ops, resume, training

out = Path(os.environ["TEST_OUT"])
device.init("CPU", seed=3, processes=2)
rank, world_size = distributed.init_worker("CPU", int(os.environ["TEST_PORT"]))
if os.environ.get("TEST_DIE") == "1" and rank == 1:
    raise RuntimeError("rank 1 dies on purpose")
if os.environ.get("TEST_DIE") == "kill" and rank == 1:
    print("rank 1 is killed on purpose", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
rng = np.random.default_rng(0)
x = rng.standard_normal((512, 25, 50)).astype(np.float32)
y = rng.integers(0, 4, 512)
p = SimpleNamespace(fc=1, natt=2, lr=1e-2, weight_decay=0.0, batch_size=16, epochs=3, seed=3)
p.__dict__.update(loss_reduction="sum", optimizer="adam", lr_schedule="constant", warmup_epochs=0, patience=0)
fused = fused_ops.load("CPU")[0]  # as the train stage: the gradients of the fused kernels are all-reduced too
trainer = training.Trainer(p, x, y, x[:64], y[:64], out / "state", rank, world_size, log=lambda line: None, fused=fused)
state = trainer.fit(resume.load_state(out / "state", "test", p.epochs))
np.savez(out / f"rank{rank}.npz", **{q.name: q.asnumpy() for q in trainer.net.get_parameters()})
(out / f"rank{rank}.json").write_text(
    json.dumps({"world_size": world_size, "losses": [h["train_loss"] for h in state["history"]]})
)
