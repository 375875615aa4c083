"""A stand-in for msrun in test_distributed: starts a scheduler and two workers as msrun does
(each worker in its own session, via setsid), waits for the workers, never stops them itself
and never reaps the scheduler.

Usage: python fake_launcher.py PIDFILE SCHEDULER_SECONDS WORKER_SECONDS [LOG_DIR DEATH]
Each worker (MS_ROLE=MS_WORKER, MS_NODE_ID=its rank) appends its pid to PIDFILE and sleeps
WORKER_SECONDS; the scheduler (MS_ROLE=MS_SCHED) exits with status 1 after SCHEDULER_SECONDS,
like one that could not bind its port. With LOG_DIR and DEATH, each worker writes to
LOG_DIR/worker_<rank>.log and rank 1 dies after 2 s, by SIGKILL (DEATH ``kill``) or with exit
status DEATH; the launcher then logs msrun's line for it (``Worker process <pid> exit with
exception. Error code: <code>.``) and, as msrun waiting for its scheduler, exits 1 only
WORKER_SECONDS later.
"""

import os
import subprocess
import sys
import time

pidfile, scheduler_s, worker_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
log_dir, death = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
subprocess.Popen(
    [sys.executable, "-c", f"import sys, time; time.sleep({scheduler_s}); sys.exit(1)"],
    env=dict(os.environ, MS_ROLE="MS_SCHED"),
)
worker = f"import os, time; open({pidfile!r}, 'a').write(f'{{os.getpid()}}\\n'); "
worker += "print('rank', os.environ['MS_NODE_ID'], 'started', flush=True); "
dying = worker + "time.sleep(2); " + ("os.kill(os.getpid(), 9)" if death == "kill" else f"raise SystemExit({death})")
workers = []
for rank in range(2):
    code = dying if death and rank == 1 else worker + f"time.sleep({worker_s})"
    env = dict(os.environ, MS_ROLE="MS_WORKER", MS_NODE_ID=str(rank))
    log = open(os.path.join(log_dir, f"worker_{rank}.log"), "w") if log_dir else None
    workers.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, start_new_session=True))
while death and all(proc.poll() in (None, 0) for proc in workers):
    time.sleep(0.2)
for proc in workers:
    if proc.poll() not in (None, 0):
        line = f"Worker process {proc.pid} exit with exception. Error code: {proc.returncode}."
        print(f"[ERROR] ME(...) [mindspore/parallel/cluster/process_entity/_api.py:365] {line}", flush=True)
        time.sleep(worker_s)
        sys.exit(1)
for proc in workers:
    proc.wait()
