"""Train the published table's rows at their own settings on full MNIST (docs/results.md, "Sweep").

    python scripts/sweep.py run --mnist-folder PATH [--rows 1/8 2/8] [--patience 20] [--epochs N] [--commit] [--cpus 0]
    python scripts/sweep.py gather CHECKOUT [CHECKOUT ...] [--patience 20]
    python scripts/sweep.py table
    python scripts/sweep.py best --mnist-folder PATH [--commit]

(``--published CSV``, before ``run`` or ``gather``, reads another published table than
``reference/published_results.csv``; the other commands refuse it.)

``run`` trains each row (all 16 without --rows, most informative first: ``sweep.ORDER``) with
``dvc exp run`` in this workspace, one after the other, each from the committed params.yaml plus
the row's settings, skipping rows the results table already has from the current code
(``code_version``) with the same budget and patience; rows of other code are dropped from the
table. After each row it updates ``metrics/results.csv`` and ``.md``, the curves
``metrics/results_curves.csv`` and ``plots/results_curves.png``, and with --commit commits
those four files at once. It can be stopped at any moment: running it again continues the
unfinished row from its last completed epoch (the train stage resumes its state when its inputs
are the same), so at most the epoch in progress is lost. Each row starts from the committed
params.yaml (written from ``git show HEAD:params.yaml``: uncommitted edits to it are discarded) and the
workspace is left with the last row's params and outputs: run it in a clone of its own
(``git clone``; not a ``git worktree``, whose DVC experiment refs are shared), or restore with
``touch params.yaml dvc.lock && git checkout HEAD -- params.yaml dvc.lock && dvc checkout``
(DVC's autostage stages dvc.lock, so a plain ``git checkout dvc.lock`` would restore the staged one).
``--cpus`` pins the run to some of the CPUs, so that two sweeps in two clones, with disjoint
``--rows``, can share a machine (docs/results.md, "Sweep"); ``gather`` then takes the rows the
clones have made with this checkout's code, the published budget and the given patience into this
checkout's tables, and refuses a row that two clones both made. ``table`` redraws the
markdown table and the picture from the two CSV files.

``best`` runs our best recipe (``sweep.RECIPE``) with ``dvc exp run --force``, so every stage
reruns, and writes ``metrics/best_recipe.json``: the test top-1 / top-5 of the epoch chosen on
validation, the wall-clock minutes of the whole pipeline, the host and the code version.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from attention_clusters import affinity, cli, device, inputs, sweep
from attention_clusters.errors import UserError
from attention_clusters.storage import atomic_path, read_json, write_json

RESULTS = Path("metrics/results.csv")
CURVES = Path("metrics/results_curves.csv")
PICTURE = Path("plots/results_curves.png")
BEST = Path("metrics/best_recipe.json")
README = Path("README.md")
OUTPUTS = [RESULTS, RESULTS.with_suffix(".md"), CURVES, PICTURE, README]  # what each command (re)writes
LIVE = Path("dvclive/plots/metrics")


def load(path, kinds, required=False, root=None):
    """The CSV at ``path`` with the columns of ``kinds`` (column -> kind, ``sweep.checked``)
    converted to their values, or an empty table with those columns when it is absent and not
    ``required``. ``root``: the checkout it belongs to when not this one (for the hint).

    Raises:
        UserError: naming ``path``: required and absent, not a CSV file, lacking a column, or a
            cell not of its column's kind.
    """
    if not path.exists() and not required:
        return pd.DataFrame(columns=list(kinds))
    hint = (
        f"restore it: git -C {root} checkout HEAD -- {path.relative_to(root)}"
        if root
        else f"restore it: git checkout HEAD -- {path}"
    )
    if not path.exists():
        where = "" if root else "run scripts/sweep.py from the repository root; "
        raise UserError(f"{path}: file not found ({where}{hint})")
    return sweep.read_table(path, kinds, hint)


def load_tables(required=False, root=None):
    """The results table and the curves table of this checkout (or the one at ``root``), checked and
    in ``sweep.ORDER``; empty when absent, unless ``required``.

    Raises:
        UserError: naming the file: see :func:`load`; a row twice or not a published row.
    """
    results_path, curves_path = (RESULTS, CURVES) if root is None else (root / RESULTS, root / CURVES)
    results = load(results_path, sweep.KINDS, required, root)
    curves = load(curves_path, sweep.CURVE_KINDS, required, root)
    return sweep.ordered(results, curves, where=str(results_path))


def of_code(results, curves, version):
    """The rows of ``results`` made by the code of ``version`` and the curves of those rows."""
    results = results[results.code_version == version]
    return results, curves[curves.row.isin([sweep.name(fc, natt) for fc, natt in zip(results.fc, results.natt)])]


def new_readme(results, with_best=True):
    """README.md's text with its results section made from ``results`` and metrics/best_recipe.json;
    None without README.md. Called before any work too, so a damaged README.md or best-recipe
    record stops the command before it trains or writes anything; ``with_best=False`` leaves the
    record out (``best`` is about to re-make it).

    Raises:
        UserError: README.md's markers are missing or out of order, or the record is damaged.
    """
    if not README.is_file():
        return None
    best = sweep.check_recipe(read_json(BEST), str(BEST)) if with_best and BEST.exists() else None
    return sweep.update_readme(README.read_text(), sweep.readme_block(results, best), str(README))


def curve_rows(row_name):
    """The finished run's val and test top-1 by epoch, from its DVCLive files."""
    val, test = sweep.read_curve(LIVE / "val_top1.tsv"), sweep.read_curve(LIVE / "test_top1.tsv")
    return pd.DataFrame(
        [{"row": row_name, "epoch": e, "val_top1": v, "test_top1": test.get(e)} for e, v in val.items()]
    )


def write(results, curves):
    """Write the results table (CSV and markdown), the curves CSV, their picture and README.md's
    results section (when there is a README.md): all made first, then written all or none
    (:func:`write_all`)."""
    readme = new_readme(results)
    files = {
        RESULTS: results.to_csv(index=False).encode(),
        RESULTS.with_suffix(".md"): sweep.markdown(results).encode(),
        CURVES: curves.to_csv(index=False).encode(),
        PICTURE: sweep.curves_png(curves),
    }
    if readme is not None:
        files[README] = readme.encode()
    write_all(files)


def check_writable(paths):
    """Stop before any work when one of ``paths`` could not be written: a folder in its place, or
    a file where a folder above it should be.

    Raises:
        UserError: naming the path; no file is changed.
    """
    for path in paths:
        above = next(p for p in path.parents if p.exists())  # "." or "/" at the latest
        if path.is_dir() or not above.is_dir():
            blocked = path if path.is_dir() else above
            raise UserError(f"{blocked}: cannot write {path} there (a {'folder' if path.is_dir() else 'file'} is in "
                            "its place); no file was changed")  # fmt: skip


def write_all(files):
    """Write ``files`` ({Path: bytes}) all or none: each to a temporary file beside it, then all
    renamed into place. (Not ``storage.atomic_path`` nested: on leaving, each removes every
    temporary of its file's stem, so results.md's would take results.csv's with it.)

    Raises:
        UserError: naming a path that cannot be written (:func:`check_writable`, no space, no
            permission); no file is then changed.
    """
    check_writable(files)
    temporaries = {}
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporaries[path] = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            temporaries[path].write_bytes(data)
    except OSError as err:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
        raise UserError(f"{err.filename}: cannot write it ({err.strerror}); no file was changed") from None
    for path, temporary in temporaries.items():
        os.replace(temporary, path)


def at_least_one(option, value):
    """Stop with one line unless ``value`` of ``option`` is None or an integer >= 1."""
    if value is not None and value < 1:
        raise UserError(f"{option} {value}: expected an integer >= 1")


def mnist_folder(args):
    """--mnist-folder as an absolute path; UserError unless it is a folder with the four MNIST files
    (read as the download_mnist stage reads them, so a missing file stops before any work)."""
    folder = Path(args.mnist_folder).expanduser().resolve()
    if not args.mnist_folder or not folder.is_dir():
        raise UserError(f"--mnist-folder '{args.mnist_folder}': not a folder (expected the four MNIST files)")
    from attention_clusters import mnist_sources  # pooch and requests: only here

    mnist_sources.from_folder(folder)
    return str(folder)


def tool(argv, **kwargs):
    """``subprocess.run(argv, **kwargs)``; UserError when the program is not on PATH."""
    try:
        return subprocess.run(argv, **kwargs)
    except FileNotFoundError:
        raise UserError(f"{argv[0]}: not found on PATH (activate the environment: source .venv/bin/activate)") from None


def git(*args):
    """Run ``git args``; returns its standard output; UserError with git's last line of complaint
    when it fails."""
    result = tool(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise UserError(f"git {args[0]}: {said} (run scripts/sweep.py in the project's git checkout)")
    return result.stdout


def commit(message, *files):
    """git commit what :func:`write` writes (README.md too, where there is one) and ``files``."""
    files = [*files, str(RESULTS), str(RESULTS.with_suffix(".md")), str(CURVES), str(PICTURE)]
    files += [str(README)] if README.is_file() else []
    git("add", *files)
    git("commit", "-q", "-m", message, "--", *files)


def experiment(name, argv, version, after_failure=""):
    """Run ``dvc exp run`` ``argv`` of experiment ``name`` from the committed params.yaml.

    Returns:
        The run's metrics/eval.json, made by the code of ``version`` (``inputs.code_version``).

    Raises:
        UserError: git or dvc is missing, params.yaml cannot be restored, the run failed, ran
        with other params than ``argv`` sets (:func:`sweep.unapplied`), or its metrics/eval.json
        is from other code.
    """
    # the committed params, then the experiment's: written from HEAD, since a failed dvc exp run can
    # leave git's index with HEAD's hash and the edited file's size and time (git checkout keeps it)
    committed = git("show", "HEAD:params.yaml")
    with atomic_path("params.yaml") as tmp:
        tmp.write_text(committed)
    tool(["dvc", "exp", "remove", name], capture_output=True)  # a recorded, untabulated try
    if tool(argv).returncode != 0:
        raise UserError(f"{name}: dvc exp run failed (see above){after_failure}")
    wrong = sweep.unapplied(argv, yaml.safe_load(Path("params.yaml").read_text()))
    if wrong:
        raise UserError(
            f"{name}: it ran with {'; '.join(wrong)} (another dvc exp run in a worktree of this repository at "
            "the same time? They share DVC's experiment refs: run each sweep in a clone of its own)"
        )
    metrics = read_json("metrics/eval.json")
    if metrics.get("code_version") != version:
        raise UserError(f"{name}: metrics/eval.json is from code {metrics.get('code_version')}, not {version}")
    return metrics


def run(args):
    folder = mnist_folder(args)
    if args.cpus:
        affinity.pin(args.cpus)
    at_least_one("--patience", args.patience)
    at_least_one("--epochs", args.epochs)
    rows = sweep.select(sweep.published_rows(args.published), args.rows)
    results, curves = load_tables()
    new_readme(results)  # a damaged README.md or best-recipe record stops here, not after a row
    check_writable(OUTPUTS)
    version, cpu, ran = inputs.code_version("eval"), device.cpu()["model"], 0
    results, curves = of_code(results, curves, version)  # rows of other code go
    for row in rows.itertuples(index=False):
        row_name = sweep.name(row.fc, row.natt)
        if args.epochs:
            row = row._replace(epochs=args.epochs)
        same = (results.fc == row.fc) & (results.natt == row.natt) & (results.budget == row.epochs)
        if (same & (results.patience == args.patience)).any():
            print(f"sweep: {row_name} done with this code ({version}), skipped", flush=True)
            continue
        argv = sweep.experiment_argv(row, folder, args.patience)
        print(f"sweep: {row_name}: {' '.join(argv)}", flush=True)
        metrics = experiment(row_name, argv, version, "; run this command again to continue the row")
        record = sweep.result(row, metrics, read_json("models/attention_cluster.json"), row.epochs, args.patience, cpu)
        results = sweep.merge(results, record)
        curves = pd.concat([curves[curves.row != row_name], curve_rows(row_name)], ignore_index=True)
        write(results, curves)
        ran += 1
        if args.commit:
            message = (
                f"sweep {row_name}: val-selected {record['ours_val_selected']:.2f} %, best on test "
                f"{record['ours_best_on_test']:.2f} % (published {row.ascend_top1_pct} / {row.gpu_top1_pct}), "
                f"{record['epochs_run']} epochs"
            )
            commit(message)
    return f"{ran} row(s) trained; {RESULTS.with_suffix('.md')}"


def best(args):
    argv = sweep.recipe_argv(mnist_folder(args))
    results, curves = load_tables()
    new_readme(results, with_best=False)  # a damaged README.md stops here, not after the pipeline
    check_writable([*OUTPUTS, BEST])
    print(f"sweep: {sweep.RECIPE_NAME}: {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    metrics = experiment(sweep.RECIPE_NAME, argv, inputs.code_version("eval"))
    minutes = (time.perf_counter() - start) / 60
    record = sweep.recipe_result(
        metrics,
        read_json("models/attention_cluster.json"),
        read_json("metrics/feature.json"),
        minutes,
        device.cpu()["model"],
    )
    write_json(BEST, record)
    write(results, curves)
    summary = f"test top-1 {record['top1']:.2f} % in {minutes:.1f} min of pipeline"
    if args.commit:
        commit(f"best recipe: {summary}", str(BEST))
    return f"{summary}; {BEST}"


def gather(args):
    version = inputs.code_version("eval")
    budgets = {(r.fc, r.natt): r.epochs for r in sweep.published_rows(args.published).itertuples()}
    at_least_one("--patience", args.patience)
    results, curves = load_tables()
    new_readme(results)  # a damaged README.md or best-recipe record stops here, not after reading the others
    results, curves = of_code(results, curves, version)
    taken = {}  # row name -> the checkout it came from
    for checkout in dict.fromkeys(Path(c).resolve() for c in args.checkouts):
        if not (checkout / RESULTS).is_file():
            raise UserError(f"{checkout}: no {RESULTS} there (expected a checkout where scripts/sweep.py run ran)")
        theirs, their_curves = load_tables(required=True, root=checkout)
        for record in theirs[theirs.code_version == version].to_dict("records"):
            row_name = sweep.name(record["fc"], record["natt"])
            if (record["fc"], record["natt"]) not in budgets:
                print(f"sweep: {row_name} of {checkout} is not a row of {args.published}: not taken", flush=True)
                continue
            wanted = (budgets[record["fc"], record["natt"]], args.patience)
            if (record["budget"], record["patience"]) != wanted:
                print(f"sweep: {row_name} of {checkout} ran with budget {record['budget']} and patience "
                      f"{record['patience']}, not {wanted[0]} and {wanted[1]}: not taken", flush=True)  # fmt: skip
                continue
            if row_name in taken:
                raise UserError(
                    f"{row_name}: in both {taken[row_name]} and {checkout}; gather each row from one checkout"
                )
            taken[row_name] = checkout
            results = sweep.merge(results, record)
            curves = pd.concat([curves[curves.row != row_name], their_curves[their_curves.row == row_name]])
    write(*sweep.ordered(results, curves, str(RESULTS)))
    return f"{len(taken)} row(s) of code {version} taken; {len(results)} row(s) in {RESULTS.with_suffix('.md')}"


def table(args):
    results, curves = load_tables(required=True)
    write(results, curves)
    return f"{len(results)} row(s): {RESULTS.with_suffix('.md')}, {PICTURE}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", help=f"published table CSV for run and gather (default {sweep.PUBLISHED})")
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="train the rows (resumable) and update the results table")
    r.add_argument("--mnist-folder", required=True, help="folder with the four MNIST files (full MNIST)")
    r.add_argument("--rows", nargs="+", default=[], help="fc/natt of the rows, e.g. 2/8 1/32 (default: all 16)")
    r.add_argument("--patience", type=int, default=20, help="epochs without a better val top-1 before stopping")
    r.add_argument("--epochs", type=int, help="epoch budget of every row (default: the published 200)")
    r.add_argument("--commit", action="store_true", help="git commit the table after each row")
    r.add_argument("--cpus", type=int, nargs="+", help="run on these CPU ids alone, e.g. 0 (default: all)")
    g = commands.add_parser("gather", help="take the rows other checkouts made with this code into this table")
    g.add_argument("checkouts", nargs="+", help="checkouts (clones) where scripts/sweep.py run ran")
    g.add_argument("--patience", type=int, default=20, help="take only rows run with this patience")
    commands.add_parser("table", help="redraw metrics/results.md and plots/results_curves.png")
    b = commands.add_parser("best", help="run our best recipe, every stage, and write metrics/best_recipe.json")
    b.add_argument("--mnist-folder", required=True, help="folder with the four MNIST files (full MNIST)")
    b.add_argument("--commit", action="store_true", help="git commit metrics/best_recipe.json")
    args = parser.parse_args(argv)
    if args.published is not None and args.command not in ("run", "gather"):
        parser.error(f"--published is read by run and gather only, not by {args.command}")
    if args.published == "":
        parser.error("--published '': expected the path of a published table CSV")
    args.published = args.published or sweep.PUBLISHED
    command = {"run": run, "gather": gather, "table": table, "best": best}[args.command]
    cli.main(f"sweep {args.command}", lambda: command(args), check_inputs=False)


if __name__ == "__main__":
    sys.exit(main())
