"""A stage process for test_distributed: launches tests/fake_launcher.py through
launcher.launch under cli.main, as stages/train.py launches msrun.

Usage (in a folder whose dvc.yaml has a stage 'launch'): python launch_driver.py PIDFILE PORT
"""

import signal
import sys
from pathlib import Path
from types import SimpleNamespace

from attention_clusters import cli, launcher

# Ctrl-C raises KeyboardInterrupt, as in a stage started from a terminal, also when the tests run
# as a background job (a shell starts those with SIGINT ignored, and the children inherit that)
signal.signal(signal.SIGINT, signal.default_int_handler)
pidfile, port = sys.argv[1], int(sys.argv[2])
fake = [sys.executable, str(Path(__file__).with_name("fake_launcher.py")), pidfile, "120", "120"]
launcher.worker_commands = lambda dist, script, log_dir: [(fake, {})]
dist = SimpleNamespace(
    launcher="msrun", workers=2, rank_table="", master_port=port, nodes=1, node_rank=0, master_addr="127.0.0.1"
)
cli.main("launch", lambda: launcher.launch(dist, "unused.py", Path("logs")) or "done")
