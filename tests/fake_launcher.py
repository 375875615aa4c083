"""A stand-in for msrun in test_distributed: starts a scheduler and two workers as msrun does
(each worker in its own session, via setsid), waits for the workers, never stops them itself
and never reaps the scheduler.

Usage: python fake_launcher.py PIDFILE SCHEDULER_SECONDS WORKER_SECONDS
Each worker (MS_ROLE=MS_WORKER) appends its pid to PIDFILE and sleeps WORKER_SECONDS; the
scheduler (MS_ROLE=MS_SCHED) exits with status 1 after SCHEDULER_SECONDS, like one that could
not bind its port.
"""

import os
import subprocess
import sys

pidfile, scheduler_s, worker_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
subprocess.Popen([sys.executable, "-c", f"import sys, time; time.sleep({scheduler_s}); sys.exit(1)"], env=dict(os.environ, MS_ROLE="MS_SCHED"))
worker = f"import os, time; open({pidfile!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep({worker_s})"
workers = [subprocess.Popen([sys.executable, "-c", worker], env=dict(os.environ, MS_ROLE="MS_WORKER"), start_new_session=True) for _ in range(2)]
for proc in workers:
    proc.wait()
