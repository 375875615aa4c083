"""Reproduce the published table as DVC experiments, then compare (docs/results.md, "Sweep").

    python scripts/sweep.py queue [--rows 2/8 1/32] [--epochs 30] [--set patience=10] [--run]
    python scripts/sweep.py table [--json exp_show.json]

``queue`` adds one ``dvc exp run --queue`` per published row (all 16 without --rows), with the
row's fc, natt, lr and weight decay, ``--epochs`` as the budget (default: the published 200) and
every ``--set key=value`` (e.g. ``optimizer=adamw``); ``--run`` then runs the queue one
experiment at a time (``dvc queue start -j 1``) and waits for it. Experiments run in their own
workspace and need the data stages' outputs in the DVC cache (run ``dvc repro feature`` first
with the same data params). ``table`` reads ``dvc exp show --json`` (or a saved copy) and writes
``metrics/published_comparison.md`` and ``.csv``.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from attention_clusters import cli, sweep
from attention_clusters.errors import UserError

OUT = Path("metrics/published_comparison")


def queue(args):
    rows = sweep.select(sweep.published_rows(args.published), args.rows)
    for argv in sweep.queue_commands(rows, args.epochs, args.set):
        print(" ".join(argv), flush=True)
        subprocess.run(argv, check=True)
    if args.run:
        subprocess.run(["dvc", "queue", "start", "-j", "1"], check=True)
        while "Queued" in _status() or "Running" in _status():
            time.sleep(10)
        status = _status()
        print(status)
        if "Failed" in status:
            raise UserError("an experiment failed; see `dvc queue logs NAME`")
    return f"{len(rows)} experiment(s) queued" + (" and run" if args.run else "; run them with: dvc queue start -j 1")


def _status():
    return subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True, check=True).stdout


def table(args):
    if args.json:
        text = Path(args.json).read_text()
    else:
        text = subprocess.run(["dvc", "exp", "show", "--json", "-A"], capture_output=True, text=True, check=True).stdout
    frame = sweep.comparison(sweep.published_rows(args.published), sweep.experiments(text))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(OUT.with_suffix(".csv"), index=False)
    OUT.with_suffix(".md").write_text(sweep.markdown(frame))
    ran = frame["ours_test_top1"].notna().sum()
    return f"{ran} run(s) against {len(frame)} row(s): {OUT.with_suffix('.md')}, {OUT.with_suffix('.csv')}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", default=sweep.PUBLISHED, help="published table CSV")
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("queue", help="queue one experiment per published row")
    q.add_argument("--rows", nargs="*", default=[], help="fc/natt of the rows to queue, e.g. 2/8 1/32 (default: all)")
    q.add_argument("--epochs", type=int, help="epoch budget of every experiment (default: the published 200)")
    q.add_argument("--set", action="append", default=[], help="extra key=value for every experiment (repeatable)")
    q.add_argument("--run", action="store_true", help="run the queue and wait for it")
    t = commands.add_parser("table", help="write metrics/published_comparison.{md,csv}")
    t.add_argument("--json", help="saved output of `dvc exp show --json -A` (default: ask dvc)")
    args = parser.parse_args(argv)
    cli.main(f"sweep {args.command}", lambda: (queue if args.command == "queue" else table)(args), check_inputs=False)


if __name__ == "__main__":
    sys.exit(main())
