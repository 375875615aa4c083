"""One node of a multi-node job for test_distributed, in a process of its own as on a machine
of its own (launcher.launch owns every descendant of its process, so two launches cannot
share one): launcher.launch of a worker script under cli.main, so a UserError is one line on
stderr with exit status 1, and SIGTERM stops the node's workers.

Usage: python node_driver.py SETTINGS_JSON SCRIPT LOG_DIR
SETTINGS_JSON is the ``distributed`` params group as one JSON object.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from attention_clusters import cli, launcher

dist = SimpleNamespace(**json.loads(sys.argv[1]))
cli.main(
    "node",
    lambda: launcher.launch(dist, sys.argv[2], Path(sys.argv[3])) or f"node {dist.node_rank} done",
    check_inputs=False,
)
